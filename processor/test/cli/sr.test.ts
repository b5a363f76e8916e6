import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TokenVerifier, checkRequest, createLogger, issueToken, newSecretText } from '@site-recovery/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  formatConfig,
  formatManifest,
  formatPoints,
  formatStatus,
  humanBytes,
  table,
} from '../../src/cli/sr-format.js';

// The `sr` CLI against a stub of the control API: what it sends, what it prints, how it exits.
const SR = path.join(import.meta.dirname, '..', '..', 'dist', 'cli', 'sr.js');

interface Seen {
  method: string;
  url: string;
  body: unknown;
  contentType?: string;
  /** What the proof in x-sr-auth proved, checked as the processor would; absent without one. */
  auth?: string;
}

// The stub checks proofs of operator tokens signed with this secret (a token file the "operator" holds).
const SECRET = Buffer.from(newSecretText(), 'hex');
const verifier = new TokenVerifier({ secret: SECRET, log: createLogger('sr-test', 'silent') });

const POINTS = [
  {
    id: 'p-10-1700000000000',
    time: '2023-11-14T22:13:20.000Z',
    lsn: 10,
    kind: 'crash',
    undoBytes: 0,
    generation: 'g0',
    retired: true,
  },
  {
    id: 'p-42-1700000060000',
    time: '2023-11-14T22:14:20.000Z',
    lsn: 42,
    kind: 'app',
    undoBytes: 3 * 1024 * 1024,
    generation: 'g1',
  },
];
const MANIFEST = {
  vm: 'web01',
  kind: 'failover',
  point: { id: 'p-42-1700000060000', time: '2023-11-14T22:14:20.000Z', lsn: 42, kind: 'app' },
  createdAt: '2023-11-14T22:20:00.000Z',
  target: { resourceGroup: 'web01-asr', network: 'prod-asr', subnet: 'web', ip: '10.0.1.7', availabilitySet: null },
  disks: [{ id: 'os', size: 64 << 20, path: '/dr/failover/web01/web01-asr/os.img' }],
};

let server: http.Server;
let url: string;
const seen: Seen[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      const body = text === '' ? undefined : (JSON.parse(text) as unknown);
      const auth = req.headers['x-sr-auth'] === undefined ? undefined : checkRequest(verifier, req, ['operator']);
      seen.push({
        method: req.method!,
        url: req.url!,
        body,
        ...(req.headers['content-type'] !== undefined ? { contentType: req.headers['content-type'] } : {}),
        ...(auth !== undefined ? { auth: auth.ok ? `ok ${auth.claims.id}` : auth.code } : {}),
      });
      const send = (status: number, doc: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(doc));
      };
      const route = `${req.method} ${req.url}`;
      if (route === 'GET /vms/web01/points') return send(200, POINTS);
      if (route === 'PUT /vms/web01/config')
        return send(200, { crashConsistentFrequencyMs: 1000, retentionMs: 86_400_000, target: { network: 'x' } });
      if (route === 'POST /vms/web01/failover') return send(200, MANIFEST);
      if (route === 'PUT /groups/shop/config') return send(200, { multiVmFrequencyMs: 120_000 });
      if (route === 'POST /groups/shop/failover') return send(200, { vms: [MANIFEST] });
      if (route === 'POST /vms/gone/failover')
        return send(410, { code: 'SR_POINT_PRUNED', message: 'point p-1-1 of gone was pruned by retention' });
      if (route === 'GET /status')
        return send(200, {
          cacheStore: { url: 'ws://x/', connected: false },
          vms: [{ vm: 'web01', state: 'replicating', appliedLsn: 42 }],
        });
      if (route === 'GET /vms/odd/points') return send(404, { error: 'no such path' });
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('not json{');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function sr(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [SR, ...args],
      { env: { ...process.env, SR_PROCESSOR_URL: url, ...env } },
      (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
      },
    );
  });
}

describe('sr', () => {
  it('lists points as a table with human sizes, and as JSON', async () => {
    const t = await sr(['points', 'web01']);
    expect(t.code).toBe(0);
    expect(t.stdout.split('\n')[0]).toMatch(/^ID\s+TIME\s+LSN\s+KIND\s+UNDO\s+GENERATION$/);
    expect(t.stdout).toContain('p-42-1700000060000  2023-11-14T22:14:20.000Z  42   app    3.0 MiB  g1');
    expect(t.stdout).toContain('g0 (older disk layout)');
    const j = await sr(['points', 'web01', '--json']);
    expect(JSON.parse(j.stdout)).toEqual(POINTS);
  });

  it('sends durations in ms and the placement, found through --processor over SR_PROCESSOR_URL', async () => {
    seen.length = 0;
    const r = await sr(
      [
        '--processor',
        url.replace('http://', ''),
        'configure',
        'web01',
        '--crash-consistent-frequency',
        '1s',
        '--app-consistent-frequency',
        '1h',
        '--retention',
        '1d',
        '--thinning',
        '2h:1h',
        '--source-network',
        'prod',
        '--source-subnet',
        'web',
        '--source-ip',
        'dhcp',
        '--target-network',
        'x',
        '--target-ip',
        '10.1.1.9',
      ],
      { SR_PROCESSOR_URL: 'http://127.0.0.1:1' },
    );
    expect(r.code).toBe(0);
    expect(seen).toEqual([
      {
        method: 'PUT',
        url: '/vms/web01/config',
        contentType: 'application/json',
        body: {
          crashConsistentFrequencyMs: 1000,
          appConsistentFrequencyMs: 3_600_000,
          retentionMs: 86_400_000,
          thinning: [{ olderThanMs: 7_200_000, keepOneEveryMs: 3_600_000 }],
          source: { network: 'prod', subnet: 'web', ip: 'dhcp' },
          target: { network: 'x', ip: '10.1.1.9' },
        },
      },
    ]);
    expect(r.stdout).toBe('crashConsistentFrequency: 1s\nretention: 1d\ntarget:\n  network: x\n');
  });

  it('prints the manifest as JSON for failover --json and sends the deadline in ms', async () => {
    seen.length = 0;
    const r = await sr(['failover', 'web01', '--point', 'latest', '--deadline', '30s', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(MANIFEST);
    expect(seen[0]?.body).toEqual({ point: 'latest', deadlineMs: 30_000 });
  });

  it('configures a group and fails it over with --group, printing {"vms": [...]} for --json', async () => {
    seen.length = 0;
    const c = await sr(['configure-group', 'shop', '--multi-vm-frequency', '2m']);
    expect([c.code, c.stdout]).toEqual([0, 'multiVmFrequency: 2m\n']);
    const f = await sr(['failover', '--group', 'shop', '--point', 'latest-multi-vm', '--json']);
    expect(f.code, f.stderr).toBe(0);
    expect(JSON.parse(f.stdout)).toEqual({ vms: [MANIFEST] });
    expect(seen.map((x) => [x.method, x.url, x.body])).toEqual([
      ['PUT', '/groups/shop/config', { multiVmFrequencyMs: 120_000 }],
      ['POST', '/groups/shop/failover', { point: 'latest-multi-vm' }],
    ]);
  });

  it.each([
    [['failover', '--point', 'latest'], /^sr: SR_BAD_OPTION: failover needs a VM or --group NAME/],
    [['failover', 'web01', '--group', 'shop', '--point', 'latest'], /takes a VM or --group NAME, not both/],
    [['failover', '--group', 'shop', '--point', 'latest'], /--point "latest" with --group must be latest-multi-vm/],
    [['failover', '--group', 'shop', '--point', '1.2', '--deadline', '5s'], /--deadline goes with --point latest/],
    [['test-failover', '--group', 'shop', '--point', 'p-1-1', '--network', 'x'], /with --group must be/],
    [['test-failover-cleanup'], /test-failover-cleanup needs a VM or --group NAME/],
    [['configure-group', 'shop', '--multi-vm-frequency', '0s'], /--multi-vm-frequency must be at least 1s/],
    [['configure-group', 'shop', '--multi-vm-frequency', 'soon'], /--multi-vm-frequency "soon"/],
    [['group-points'], /missing required argument 'group'/],
  ])('%j is refused with SR_BAD_OPTION before anything is sent', async (args, message) => {
    seen.length = 0;
    const r = await sr(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^sr: SR_BAD_OPTION: /);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(seen).toEqual([]);
  });

  it('sends every POST and PUT as JSON: {} when the action takes no parameters', async () => {
    seen.length = 0;
    await sr(['commit', 'web01']);
    await sr(['failover', 'web01', '--point', 'latest']);
    await sr(['configure', 'web01', '--retention', '1d']);
    expect(seen.map((x) => [x.method, x.url, x.contentType, x.body])).toEqual([
      ['POST', '/vms/web01/commit', 'application/json', {}],
      ['POST', '/vms/web01/failover', 'application/json', { point: 'latest' }],
      ['PUT', '/vms/web01/config', 'application/json', { retentionMs: 86_400_000 }],
    ]);
  });

  it('proves the token of --token-file or SR_TOKEN_FILE afresh in every request, never sending the token', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sr-token-'));
    try {
      const now = Math.floor(Date.now() / 1000);
      const token = issueToken(SECRET, { id: 'op-1', role: 'operator', issuedAt: now, expiresAt: now + 600 });
      const file = path.join(dir, 'operator.token');
      await fsp.writeFile(file, token + '\n', { mode: 0o600 });
      seen.length = 0;
      expect((await sr(['--token-file', file, 'points', 'web01'])).code).toBe(0);
      expect((await sr(['failover', 'web01', '--point', 'latest'], { SR_TOKEN_FILE: file })).code).toBe(0);
      expect((await sr(['status'], { SR_TOKEN_FILE: file })).code).toBe(0);
      // Each proof passed the single-use check, so none was a replay of another.
      expect(seen.map((x) => x.auth)).toEqual(['ok op-1', 'ok op-1', 'ok op-1']);
      const mac = token.split('.')[2]!;
      expect(JSON.stringify(seen)).not.toContain(mac);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [
      ['failover', 'gone', '--point', 'p-1-1'],
      2,
      /^sr: SR_POINT_PRUNED: point p-1-1 of gone was pruned by retention; retention has removed that point; pick a newer one/,
    ],
    [['configure', 'web01', '--retention', '30'], 2, /^sr: SR_BAD_OPTION: --retention "30" has no unit/],
    [
      ['configure', 'web01', '--source-network', 'prod'],
      2,
      /^sr: SR_BAD_OPTION: --source-network, --source-subnet and --source-ip go together/,
    ],
    [
      ['configure', 'web01', '--target-ip', '10.1.1'],
      2,
      /^sr: SR_BAD_OPTION: --target-ip "10.1.1" is not an IPv4 address/,
    ],
    [['failover', 'web01'], 2, /^sr: SR_BAD_OPTION: required option '--point <point>' not specified/],
    [['frobnicate'], 2, /^sr: SR_BAD_OPTION: unknown command 'frobnicate'/],
    [['status', 'nope'], 2, /^sr: SR_VM_NOT_FOUND: the processor does not replicate a VM named nope \(it has: web01\)/],
    [
      ['points', 'odd'],
      1,
      /^sr: SR_UNREACHABLE: GET \/vms\/odd\/points: the processor answered 404 without an error code; it may be older than this sr/,
    ],
    [
      ['commit', 'web01'],
      1,
      /^sr: SR_UNREACHABLE: POST \/vms\/web01\/commit: the processor answered 500 with a body that is not JSON/,
    ],
    [
      ['--processor', 'http://127.0.0.1:1', 'points', 'web01'],
      1,
      /^sr: SR_UNREACHABLE: cannot reach the processor at http:\/\/127.0.0.1:1 \(ECONNREFUSED\)/,
    ],
  ])('%j exits %d with one line on stderr', async (args, code, message) => {
    const r = await sr(args);
    expect(r.code).toBe(code);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  });
});

describe('sr-format', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1536, '1.5 KiB'],
    [10 * 1024 * 1024, '10 MiB'],
    [5.5 * 1024 ** 3, '5.5 GiB'],
  ])('humanBytes(%d) = %s', (n, text) => {
    expect(humanBytes(n)).toBe(text);
  });

  it('shows a configuration in the spelling sr configure takes', () => {
    expect(
      formatConfig({
        crashConsistentFrequencyMs: 300_000,
        retentionMs: 86_400_000,
        thinning: [{ olderThanMs: 7_200_000, keepOneEveryMs: 3_600_000 }],
        source: {},
        target: { ip: 'dhcp' },
      }),
    ).toBe('crashConsistentFrequency: 5m\nretention: 1d\nthinning: 2h:1h\nsource: -\ntarget:\n  ip: dhcp\n');
    expect(formatConfig({ thinning: [] })).toBe('thinning: none\n');
  });

  it('shows group points, a split group and the groups of the status', () => {
    const mv = { ...POINTS[1]!, kind: 'multi-vm' as const, group: { name: 'shop', point: '3.17' } };
    const listed = formatPoints([POINTS[0] as never, mv]).split('\n');
    expect(listed[0]).toMatch(/^ID\s+TIME\s+LSN\s+KIND\s+UNDO\s+GENERATION\s+GROUP POINT$/);
    expect(listed[1]).toMatch(/crash\s+0 B\s+g0 \(older disk layout\)\s+-$/);
    expect(listed[2]).toMatch(/multi-vm\s+3\.0 MiB\s+g1\s+shop 3\.17$/);
    const split = formatManifest({
      ...MANIFEST,
      kind: 'failover',
      point: { ...MANIFEST.point, kind: 'multi-vm', group: { name: 'shop', point: '3.17' } },
      split: { group: 'shop', left: ['db01', 'web02'] },
    } as never);
    expect(split).toContain('(multi-vm, group point shop 3.17, ');
    expect(split).toContain('the replication group shop is split: db01, web02 still replicate from the source\n');
    const now = Date.parse('2026-01-05T10:00:00Z');
    const text = formatStatus(
      {
        cacheStore: { url: 'ws://x/', connected: true },
        groups: [
          {
            name: 'shop',
            members: ['db01', 'web01'],
            multiVmFrequencyMs: 60_000,
            rounds: { completed: 12, failed: 1 },
            lastPoint: { id: '3.17', time: '2026-01-05T09:59:30Z', members: ['db01', 'web01'] },
            lastFailure: { round: '3.9', failedBy: 'web01', code: 'SR_GROUP_TIMEOUT', reason: 'no READY', at: '' },
          },
        ],
        vms: [{ vm: 'web01', group: 'shop', state: 'replicating', appliedLsn: 42 }],
      },
      [{ vm: 'web01', group: 'shop', state: 'replicating', appliedLsn: 42 }],
      now,
    );
    expect(text).toMatch(/^VM\s+STATE\s+APPLIED LSN\s+BEHIND\s+LAG P99\s+INITIAL SYNC\s+GROUP$/m);
    expect(text).toMatch(/^web01\s+replicating\s+42\s+-\s+-\s+-\s+shop$/m);
    expect(text).toMatch(/^GROUP\s+MEMBERS\s+EVERY\s+LAST POINT\s+AGE\s+OK\/FAILED\s+LAST FAILURE$/m);
    expect(text).toMatch(
      /^shop\s+db01,web01\s+1m\s+3\.17\s+30s ago\s+12\/1\s+3\.9 SR_GROUP_TIMEOUT by web01: no READY$/m,
    );
  });

  it('aligns columns and leaves no trailing spaces', () => {
    expect(
      table(
        ['A', 'BB'],
        [
          ['xxx', 'y'],
          ['z', ''],
        ],
      ),
    ).toBe('A    BB\nxxx  y\nz\n');
  });
});
