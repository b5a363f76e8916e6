import { formatDuration } from '@site-recovery/shared';
import type { GroupPointDoc, GroupStatusDoc, StatusDoc } from '../api/control-client.js';
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

/** Points of a retired replica (an older disk layout) say so beside their generation. */
export function formatPoints(points: readonly PointInfo[]): string {
  if (points.length === 0) return 'no recovery points yet\n';
  // The group column only where a multi-VM point is listed.
  const grouped = points.some((p) => p.group !== undefined);
  return table(
    ['ID', 'TIME', 'LSN', 'KIND', 'UNDO', 'GENERATION', ...(grouped ? ['GROUP POINT'] : [])],
    points.map((p) => [
      p.id,
      p.time,
      String(p.lsn),
      p.kind,
      humanBytes(p.undoBytes),
      `${p.generation ?? '-'}${p.retired === true ? ' (older disk layout)' : ''}`,
      ...(grouped ? [p.group !== undefined ? `${p.group.name} ${p.group.point}` : '-'] : []),
    ]),
  );
}

/** The points of a group every member holds, with each member's own point. */
export function formatGroupPoints(points: readonly GroupPointDoc[]): string {
  if (points.length === 0) return 'no group point that every member holds yet\n';
  return table(
    ['GROUP POINT', 'TIME', 'MEMBERS'],
    points.map((p) => [p.id, p.time, p.members.map((m) => `${m.vm}:${m.point}`).join(' ')]),
  );
}

/** Every member's manifest of a group failover or test failover. */
export function formatGroupFailover(group: string, manifests: readonly Manifest[]): string {
  const first = manifests[0];
  const what = first?.kind === 'test-failover' ? 'test failover of group' : 'failed over group';
  const head = `${what} ${group} at group point ${first?.point.group?.point ?? '?'}: ${manifests.map((m) => m.vm).join(', ')}\n`;
  return head + manifests.map((m) => formatManifest(m)).join('');
}

export function formatManifest(m: Manifest): string {
  const t = m.target;
  const head = m.kind === 'failover' ? `failed over ${m.vm}` : `test failover of ${m.vm} created`;
  const group = m.point.group !== undefined ? `, group point ${m.point.group.name} ${m.point.group.point}` : '';
  const split =
    m.split !== undefined
      ? `the replication group ${m.split.group} is split: ${m.split.left.join(', ')} still ${m.split.left.length > 1 ? 'replicate' : 'replicates'} from the source\n`
      : '';
  return (
    `${head} at point ${m.point.id} (${m.point.kind}${group}, ${m.point.time}, LSN ${m.point.lsn})\n` +
    split +
    `target: resource group ${t.resourceGroup}, network ${t.network}, subnet ${t.subnet}, IP ${t.ip}` +
    `${t.availabilitySet !== null && t.availabilitySet !== undefined ? `, availability set ${t.availabilitySet}` : ''}\n` +
    table(
      ['DISK', 'SIZE', 'PATH'],
      m.disks.map((d) => [d.id, humanBytes(d.size), d.path]),
    )
  );
}

const DURATION_KEYS = new Set([
  'crashConsistentFrequencyMs',
  'appConsistentFrequencyMs',
  'retentionMs',
  'multiVmFrequencyMs',
]);

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

/** Each group: its members, last group point and how old it is, rounds, and the last failure. */
export function formatGroups(groups: readonly GroupStatusDoc[], now = Date.now()): string {
  if (groups.length === 0) return '';
  const rows = groups.map((g) => {
    const last = g.lastPoint;
    const f = g.lastFailure;
    return [
      g.name,
      g.members.join(',') || '-',
      formatDuration(g.multiVmFrequencyMs),
      last !== undefined ? last.id : '-',
      last !== undefined
        ? `${formatDuration(Math.max(0, Math.round((now - Date.parse(last.time)) / 1000) * 1000))} ago`
        : '-',
      g.rounds !== undefined ? `${g.rounds.completed}/${g.rounds.failed}` : '-',
      f !== undefined ? `${f.round} ${f.code}${f.failedBy !== undefined ? ` by ${f.failedBy}` : ''}: ${f.reason}` : '-',
    ];
  });
  return table(['GROUP', 'MEMBERS', 'EVERY', 'LAST POINT', 'AGE', 'OK/FAILED', 'LAST FAILURE'], rows);
}

export function formatStatus(status: StatusDoc, vms: StatusDoc['vms'], now = Date.now()): string {
  const cs = status.cacheStore;
  const head = `cache-store ${cs.url} ${cs.connected ? 'connected' : 'NOT connected'}\n`;
  const groups = formatGroups(status.groups ?? [], now);
  if (vms.length === 0) return `${head}no VMs\n${groups}`;
  const grouped = vms.some((v) => typeof v.group === 'string');
  return (
    head +
    table(
      ['VM', 'STATE', 'APPLIED LSN', 'BEHIND', 'LAG P99', 'INITIAL SYNC', ...(grouped ? ['GROUP'] : [])],
      vms.map((v) => [
        v.vm,
        v.state + (v.errorCode !== undefined ? ` (${v.errorCode})` : ''),
        String(v.appliedLsn),
        v.cacheStoreLastLsn !== undefined ? String(Math.max(0, v.cacheStoreLastLsn - v.appliedLsn)) : '-',
        v.lagMs !== undefined && v.lagMs.samples > 0 ? `${v.lagMs.p99} ms` : '-',
        v.resync !== undefined
          ? `resync ${v.resync.percent}%`
          : v.initialSync !== undefined
            ? `${v.initialSync.state} ${v.initialSync.percent}%`
            : '-',
        ...(grouped ? [v.group ?? '-'] : []),
      ]),
    ) +
    (groups !== '' ? `\n${groups}` : '')
  );
}
