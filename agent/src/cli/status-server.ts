import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A read-only HTTP endpoint: GET /status answers the JSON `status()` returns; anything else 404. */
export async function serveStatus(
  host: string,
  port: number,
  status: () => unknown,
): Promise<{ address: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/status' || req.url === '/health')) {
      const body = JSON.stringify(req.url === '/health' ? { ok: true } : status());
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    } else {
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: 'not found: try GET /status' }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    address: `${a.address}:${a.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
