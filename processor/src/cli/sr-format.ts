import { formatDuration } from '@site-recovery/shared';
import type { StatusDoc } from '../api/control-client.js';
import type { Manifest } from '../failover/manifest.js';
import type { PointInfo } from '../points/recovery-point.js';

// Human output of the `sr` CLI. Scripts use --json; these layouts may change.

/** Left-aligned columns separated by two spaces, header first. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/** 1536 → "1.5 KiB"; whole bytes below 1 KiB. */
export function humanBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '?';
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${UNITS[u]}`;
}

export function formatPoints(points: readonly PointInfo[]): string {
  if (points.length === 0) return 'no recovery points yet\n';
  return table(
    ['ID', 'TIME', 'LSN', 'KIND', 'UNDO'],
    points.map((p) => [p.id, p.time, String(p.lsn), p.kind, humanBytes(p.undoBytes)]),
  );
}

export function formatManifest(m: Manifest): string {
  const t = m.target;
  const head = m.kind === 'failover' ? `failed over ${m.vm}` : `test failover of ${m.vm} created`;
  return (
    `${head} at point ${m.point.id} (${m.point.kind}, ${m.point.time}, LSN ${m.point.lsn})\n` +
    `target: resource group ${t.resourceGroup}, network ${t.network}, subnet ${t.subnet}, IP ${t.ip}` +
    `${t.availabilitySet !== null && t.availabilitySet !== undefined ? `, availability set ${t.availabilitySet}` : ''}\n` +
    table(
      ['DISK', 'SIZE', 'PATH'],
      m.disks.map((d) => [d.id, humanBytes(d.size), d.path]),
    )
  );
}

const DURATION_KEYS = new Set(['crashConsistentFrequencyMs', 'appConsistentFrequencyMs', 'retentionMs']);

/** `key: value` lines, nested objects indented; durations in the CLI's own spelling. */
export function formatConfig(config: Record<string, unknown>, indent = ''): string {
  let out = '';
  for (const [k, v] of Object.entries(config)) {
    if (k === 'thinning' && Array.isArray(v)) {
      out += `${indent}${k}: ${formatThinning(v)}\n`;
    } else if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      out +=
        Object.keys(v).length === 0
          ? `${indent}${k}: -\n`
          : `${indent}${k}:\n${formatConfig(v as Record<string, unknown>, `${indent}  `)}`;
    } else if (DURATION_KEYS.has(k) && typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) {
      out += `${indent}${k.replace(/Ms$/, '')}: ${formatDuration(v)}\n`;
    } else {
      out += `${indent}${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}\n`;
    }
  }
  return out;
}

/** Thinning tiers in the spelling `sr configure --thinning` takes (`2h:1h,1d:6h`), `none` for none. */
function formatThinning(tiers: readonly unknown[]): string {
  if (tiers.length === 0) return 'none';
  return tiers
    .map((t) => {
      const { olderThanMs, keepOneEveryMs } = t as { olderThanMs?: unknown; keepOneEveryMs?: unknown };
      const ok = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
      return ok(olderThanMs) && ok(keepOneEveryMs)
        ? `${formatDuration(olderThanMs)}:${formatDuration(keepOneEveryMs)}`
        : JSON.stringify(t);
    })
    .join(',');
}

export function formatStatus(status: StatusDoc, vms: StatusDoc['vms']): string {
  const cs = status.cacheStore;
  const head = `cache-store ${cs.url} ${cs.connected ? 'connected' : 'NOT connected'}\n`;
  if (vms.length === 0) return `${head}no VMs\n`;
  return (
    head +
    table(
      ['VM', 'STATE', 'APPLIED LSN', 'BEHIND', 'LAG P99', 'INITIAL SYNC'],
      vms.map((v) => [
        v.vm,
        v.state + (v.errorCode !== undefined ? ` (${v.errorCode})` : ''),
        String(v.appliedLsn),
        v.cacheStoreLastLsn !== undefined ? String(Math.max(0, v.cacheStoreLastLsn - v.appliedLsn)) : '-',
        v.lagMs !== undefined && v.lagMs.samples > 0 ? `${v.lagMs.p99} ms` : '-',
        v.initialSync !== undefined ? `${v.initialSync.state} ${v.initialSync.percent}%` : '-',
      ]),
    )
  );
}
