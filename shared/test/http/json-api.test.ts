import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, SrError, createLogger } from '../../src/index.js';
import { JsonReply, jsonApi, type Authorization, type Route } from '../../src/http/json-api.js';
import { listenHttp, type HttpListener } from '../../src/http/listen.js';

const log = createLogger('json-api-test', 'silent');
let server: HttpListener;
let calls = 0;

const routes: Route[] = [
  { method: 'GET', path: '/status', handler: () => ({ up: true }) },
  { method: 'GET', path: '/health', handler: () => new JsonReply(503, { ok: false }) },
  {
    method: 'POST',
    path: '/vms/:vm/echo',
    handler: ({ params, body }) => {
      calls++;
      return { vm: params['vm'], body };
    },
  },
  {
    method: 'POST',
    path: '/fail/:how',
    handler: ({ params }) => {
      if (params['how'] === 'bad') throw new SrError(ErrorCode.BAD_OPTION, 'bad input');
      throw new Error('boom');
    },
  },
];

beforeAll(async () => {
  server = await listenHttp({ host: '127.0.0.1', port: 0 }, jsonApi(routes, { log, maxBodyBytes: 1024 }), log);
});
afterAll(() => server.close());

/** One request over a real socket; returns status, headers and the parsed body. */
function request(
  method: string,
  path: string,
  body?: string,
  headers: http.OutgoingHttpHeaders = body !== undefined ? { 'content-type': 'application/json' } : {},
  port = server.address.port,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          json: text === '' ? undefined : JSON.parse(text),
        });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('jsonApi', () => {
  it('routes with decoded parameters and parses the JSON body', async () => {
    const r = await request('POST', '/vms/web%2001/echo', JSON.stringify({ a: 1 }));
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.json).toEqual({ vm: 'web 01', body: { a: 1 } });
  });

  it('answers a JsonReply with its own status', async () => {
    const r = await request('GET', '/health');
    expect(r).toMatchObject({ status: 503, json: { ok: false } });
  });

  it('HEAD is GET without a body', async () => {
    const r = await request('HEAD', '/status');
    expect(r.status).toBe(200);
    expect(r.json).toBeUndefined();
  });

  it('404 for an unknown path, 405 with allow for a wrong method', async () => {
    expect(await request('GET', '/nope')).toMatchObject({ status: 404, json: { code: 'SR_NOT_FOUND' } });
    const r = await request('DELETE', '/status');
    expect(r).toMatchObject({ status: 405, json: { code: 'SR_METHOD_NOT_ALLOWED' } });
    expect(r.headers['allow']).toBe('GET');
  });

  it('refuses a body past the limit and one that is not JSON, without calling the handler', async () => {
    const before = calls;
    expect(await request('POST', '/vms/a/echo', 'x'.repeat(2048))).toMatchObject({
      status: 413,
      json: { code: ErrorCode.LIMIT },
    });
    expect(await request('POST', '/vms/a/echo', '{not json')).toMatchObject({
      status: 400,
      json: { code: ErrorCode.BAD_OPTION },
    });
    expect(calls).toBe(before);
  });

  it('maps errors: a shared code to 4xx, anything else to 500 SR_INTERNAL', async () => {
    expect(await request('POST', '/fail/bad')).toMatchObject({ status: 400, json: { code: ErrorCode.BAD_OPTION } });
    expect(await request('POST', '/fail/other')).toMatchObject({
      status: 500,
      json: { code: ErrorCode.INTERNAL, message: 'boom' },
    });
  });
});

describe('jsonApi guards', () => {
  let guarded: HttpListener;
  const seen: (string | undefined)[] = [];
  const authorize = (req: http.IncomingMessage): Authorization =>
    req.headers['x-test-token'] === 'good'
      ? { ok: true, caller: { id: 'op-1', role: 'operator' } }
      : { ok: false, status: 401, code: 'SR_AUTH', message: 'no credential' };

  beforeAll(async () => {
    const guardedRoutes: Route[] = [
      { method: 'GET', path: '/health', open: true, handler: () => ({ ok: true }) },
      {
        method: 'POST',
        path: '/act',
        handler: ({ caller }) => {
          seen.push(caller?.id);
          return { done: true };
        },
      },
    ];
    guarded = await listenHttp(
      { host: '127.0.0.1', port: 0 },
      jsonApi(guardedRoutes, {
        log,
        authorize,
        requireJsonContentType: true,
        allowedHost: (host) => host === `127.0.0.1:${guarded.address.port}`,
      }),
      log,
    );
  });
  afterAll(() => guarded.close());

  const port = (): number => guarded.address.port;
  const json = { 'content-type': 'application/json' };

  it('an open route needs no credential; every other one does, and the handler learns who called', async () => {
    expect(await request('GET', '/health', undefined, {}, port())).toMatchObject({ status: 200 });
    expect(await request('POST', '/act', '{}', json, port())).toMatchObject({ status: 401, json: { code: 'SR_AUTH' } });
    expect(await request('POST', '/act', '{}', { ...json, 'x-test-token': 'good' }, port())).toMatchObject({
      status: 200,
    });
    expect(seen).toEqual(['op-1']);
  });

  it('refuses what a browser can send across sites: no JSON type (even empty), or another type', async () => {
    const good = { 'x-test-token': 'good' };
    for (const headers of [good, { ...good, 'content-type': 'text/plain' }]) {
      expect(await request('POST', '/act', undefined, headers, port())).toMatchObject({
        status: 415,
        json: { code: 'SR_UNSUPPORTED_MEDIA_TYPE' },
      });
    }
    const form = { ...good, 'content-type': 'application/x-www-form-urlencoded' };
    expect(await request('POST', '/act', 'a=1', form, port())).toMatchObject({ status: 415 });
    expect(seen).toEqual(['op-1']);
  });

  it('refuses a Host it does not serve (DNS rebinding), before anything else', async () => {
    const r = await request('GET', '/health', undefined, { host: 'evil.example' }, port());
    expect(r).toMatchObject({ status: 421, json: { code: 'SR_BAD_HOST' } });
  });
});
