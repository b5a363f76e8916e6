// npm run bench:group — what a replication group's barrier costs the VMs (issue #11). AGENTS agents
// (default 8) on this machine, each under steady fio load held at RATE (default 10m, fio's MiB/s: busy,
// not saturated), cache-store and processor beside them, authentication on. Two configurations in one
// run, interleaved RUNS times:
//   none   the same VMs, not in a group;
//   group  one group, a multi-VM point every FREQUENCY (default 1s).
// Reports per configuration: fio's write MB/s (all VMs) and completion latency p99, and for the group the
// write hold of each barrier as the agents measured it at the NBD reply: how long each member's gate was
// closed per barrier (gate*), the longest reply wait per barrier and member (barrierHold*), and over every
// held write (writeHold*); rounds committed and aborted; then the throughput lost.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { GroupEnv, ReplicationEnv, srOk, startFio } from '@site-recovery/test';
import { ROOT, median } from './lib.js';

const AGENTS = Number(process.env.AGENTS ?? 8);
const RUNS = Number(process.env.RUNS ?? 3);
const SECONDS = Number(process.env.SECONDS_PER_RUN ?? 30);
const RATE = process.env.RATE ?? '10m';
const FREQUENCY = process.env.FREQUENCY ?? '1s';
const DISK = 256 * 2 ** 20;
const NAMES = Array.from({ length: AGENTS }, (_, i) => `g${String(i + 1).padStart(2, '0')}`);

/** Busy share of all CPUs since `from` (from /proc/stat): how loaded the machine was during a run. */
function cpuTimes() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  return { idle, total: f.reduce((a, b) => a + b, 0) };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
const ROLES = { agents: 'sr-agent.js', cacheStore: 'sr-cache-store.js', processor: 'sr-processor.js' };
/** CPU seconds used so far by the processes of each role, found by their command lines in /proc. */
function cpuByRole() {
  const out = Object.fromEntries(Object.keys(ROLES).map((k) => [k, 0]));
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd, stat;
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const role = Object.keys(ROLES).find((k) => cmd.includes(ROLES[k]));
    if (role === undefined) continue;
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out[role] += (Number(f[11]) + Number(f[12])) / CLK_TCK;
  }
  return out;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** The agents' barrier lines (one per round and member): each with the round and the hold it caused. */
function barriersOf(stderr) {
  const out = [];
  for (const line of stderr.split('\n')) {
    if (!line.includes('"holdMs"')) continue;
    try {
      const j = JSON.parse(line);
      if (typeof j.holdMs === 'number' && typeof j.round === 'string') out.push(j);
    } catch {
      // a torn last line
    }
  }
  return out;
}

async function runOnce(grouped) {
  const env = await ReplicationEnv.start(`bench-group-${grouped ? 'on' : 'off'}`);
  let group;
  try {
    if (grouped) {
      group = await GroupEnv.start(env, { group: 'bench', names: NAMES, diskBytes: DISK });
      await srOk(env.processor, ['configure-group', 'bench', '--multi-vm-frequency', FREQUENCY]);
    } else for (const n of NAMES) await env.protect(n, [{ id: 'os', size: DISK }]);
    const vms = NAMES.map((n) => env.vms.get(n));
    for (const vm of vms) await env.drained(vm);
    const logStart = vms.map((vm) => vm.agent.stderr().length);
    const cpu0 = cpuTimes();
    const roles0 = cpuByRole();
    const fios = vms.map((vm) =>
      startFio(
        [
          '--output-format=json',
          '--name=load',
          '--ioengine=nbd',
          `--uri=${vm.agent.uri('os')}`,
          '--rw=randwrite',
          '--bs=64k',
          '--iodepth=4',
          `--size=${DISK}`,
          '--time_based',
          `--runtime=${SECONDS}`,
          `--rate=${RATE}`,
          '--refill_buffers',
          '--buffer_compress_percentage=50',
        ],
        { timeoutMs: (SECONDS + 60) * 1000 },
      ),
    );
    const reports = await Promise.all(fios.map((f) => f.done));
    const cpu1 = cpuTimes();
    const roles1 = cpuByRole();
    const cpuBusyPct = 100 * (1 - (cpu1.idle - cpu0.idle) / (cpu1.total - cpu0.total));
    let bytes = 0;
    let clatP99 = 0;
    for (const r of reports) {
      if (r.code !== 0) throw new Error(`fio exited ${r.code}: ${r.stderr.slice(-500)}`);
      const w = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0].write;
      bytes += w.io_bytes;
      clatP99 = Math.max(clatP99, (w.clat_ns?.percentile?.['99.000000'] ?? 0) / 1e6);
    }
    const row = {
      config: grouped ? `group every ${FREQUENCY}` : 'no group',
      fioMBps: bytes / 1e6 / SECONDS,
      clatP99ms: clatP99,
      cpuBusyPct,
      // CPU of each role over the run, as a share of one core (fio's live only within it).
      ...Object.fromEntries(Object.keys(ROLES).map((k) => [`${k}CorePct`, (100 * (roles1[k] - roles0[k])) / SECONDS])),
    };
    if (grouped) {
      const barriers = vms.flatMap((vm, i) => barriersOf(vm.agent.stderr().slice(logStart[i])));
      // Per barrier and member: how long its gate was closed, and the longest any write reply waited.
      const gates = barriers.map((b) => b.holdMs).sort((a, b) => a - b);
      const holds = barriers.map((b) => b.maxWriteHoldMs ?? 0).sort((a, b) => a - b);
      const statuses = await Promise.all(NAMES.map((n) => group.groupStatus(n)));
      const writeHolds = statuses.map((s) => s.writeHoldMs);
      const rounds = new Set(barriers.map((b) => b.round));
      const committed = new Set(barriers.filter((b) => b.outcome === 'committed').map((b) => b.round));
      Object.assign(row, {
        rounds: rounds.size,
        committed: committed.size,
        gateP50ms: percentile(gates, 50),
        gateP99ms: percentile(gates, 99),
        gateMaxms: gates.at(-1) ?? 0,
        barrierHoldP50ms: percentile(holds, 50),
        barrierHoldP99ms: percentile(holds, 99),
        barrierHoldMaxms: holds.at(-1) ?? 0,
        writeHoldP99ms: Math.max(...writeHolds.map((h) => h.p99)),
        writeHoldMaxms: Math.max(...writeHolds.map((h) => h.max)),
        writesHeld: writeHolds.reduce((a, h) => a + h.count, 0),
      });
    }
    return row;
  } finally {
    await group?.close();
    await env.close();
  }
}

const rows = { none: [], group: [] };
for (let i = 0; i < RUNS; i++) {
  for (const grouped of [false, true]) {
    const r = await runOnce(grouped);
    process.stderr.write(`run ${i + 1}/${RUNS}: ${JSON.stringify(r)}\n`);
    rows[grouped ? 'group' : 'none'].push(r);
  }
}
const summary = Object.values(rows).map((rs) => {
  const keys = Object.keys(rs[0]).filter((x) => typeof rs[0][x] === 'number');
  return { config: rs[0].config, ...Object.fromEntries(keys.map((x) => [x, +median(rs.map((r) => r[x])).toFixed(2)])) };
});
const lost = 1 - summary[1].fioMBps / summary[0].fioMBps;
console.log(
  `\nbench:group — ${AGENTS} agents, fio randwrite 64k QD4 at ${RATE} each, ${SECONDS}s, median of ${RUNS} interleaved runs`,
);
console.table(summary);
console.log(`throughput lost with the group: ${(lost * 100).toFixed(2)}%`);
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(
  path.join(ROOT, 'bench/results', `group-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
  JSON.stringify({ agents: AGENTS, rate: RATE, frequency: FREQUENCY, runs: rows, summary, lost }, null, 2),
);
