import fs from 'node:fs';
import net from 'node:net';

/** Lowest port of the kernel's ephemeral range (outgoing connections and `listen(0)` take ports from it). */
function ephemeralLow(): number {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 11_000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A loopback port that is free now, for a daemon that must be told its address before it starts (a
 * group member's --group-listen, named in every member's --peers). Picked at random below the
 * ephemeral range: a port from `listen(0)` could be taken, before the daemon binds it, by any of the
 * outgoing connections the other tests make meanwhile; nothing takes these but a listener.
 */
export async function freePort(): Promise<number> {
  const low = 10_000;
  const high = ephemeralLow();
  for (let i = 0; i < 100; i++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free loopback port found in ${low}-${high - 1}`);
}
