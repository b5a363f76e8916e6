// npm run bench:e2e — churn through the whole path on this machine (agent, cache-store and processor
// all here): fio writes through the agent's NBD export for a fixed time, then we wait for the
// processor to apply everything. Two modes per kind of data:
//   sustained  fio holds the churn at RATE (default 100m, fio's MiB/s) — can the path keep up with
//              that churn, and at what lag? This is the figure a churn limit is quoted as.
//   max        fio writes as fast as the agent takes it; the path's ceiling on this machine, with the
//              lag that builds up while the writer outruns replication.
//   drill      (MODE=drill only) as sustained, with a test failover of the VM created a quarter of the
//              way in and kept to the end: does a drill slow replication down? (The scenario test only
//              checks that replication goes on; how far behind it runs is this figure.)
// Reports source MB/s replicated (bytes written / time until the replica caught up), wire bytes per
// byte written, replication lag p50/p99 (NBD reply to apply) over the processor's window of the
// last 4096 records, and the most records the processor was seen behind the agent (sampled every 250 ms).
// AUTH=1 runs the daemons with authentication (secrets and tokens made with sr), TLS=1 with wss:// links
// and an https control API (a CA made with openssl at run time); without them they run --insecure.
// COMPARE=1 runs both, insecure and auth+TLS, interleaved run by run, and reports the lag p99 ratio of each
// pair (issue #10's target). cpuMsPerMB is the CPU time (user + system) of each daemon from the start of the
// churn until the replica caught up, per MB written.
import { spawn, execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { benchCredentials } from './credentials.js';
import { ROOT, benchDir, inScratchDir, median, nodeFlagsOf } from './lib.js';

const RUNS = Number(process.env.RUNS ?? 3);
const SECONDS = Number(process.env.SECONDS_PER_RUN ?? 20);
const DISK = 2 * 2 ** 30;
const RATE = process.env.RATE ?? '100m';
const MODES = { sustained: [`--rate=${RATE}`], max: [], drill: [`--rate=${RATE}`] };
/** Modes run when MODE does not name one. */
const DEFAULT_MODES = ['sustained', 'max'];
const SR_CLI = path.join(ROOT, 'processor/dist/cli/sr.js');
const execFileAsync = promisify(execFile);
const DATA = {
  mixed: ['--buffer_compress_percentage=50', '--buffer_compress_chunk=4k', '--refill_buffers'],
  random: ['--refill_buffers'],
};

function start(cli, args, env = {}) {
  const child = spawn(process.execPath, [...nodeFlagsOf(cli), cli, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SR_LOG_LEVEL: 'warn', ...env },
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.includes('"ready"'));
      if (line)
        resolve({ ready: JSON.parse(line), pid: child.pid, stop: async () => (child.kill('SIGTERM'), await exited) });
    });
    child.once('exit', (code) => reject(new Error(`${cli} exited ${code}: ${err}`)));
  });
}

const on = (name) => ['1', 'true', 'yes'].includes(String(process.env[name] ?? '').toLowerCase());
const CONFIGS = on('COMPARE')
  ? [
      { auth: false, tls: false },
      { auth: true, tls: true },
    ]
  : [{ auth: on('AUTH'), tls: on('TLS') }];
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function runOnce(kind, mode, security) {
  const dir = benchDir(`e2e-${kind}-${mode}`);
  const img = path.join(dir, 'os.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, DISK);
  const sec = await benchCredentials(path.join(dir, 'credentials'), security);
  const cs = await start(path.join(ROOT, 'cache-store/dist/cli/sr-cache-store.js'), [
    '--listen',
    '127.0.0.1:0',
    '--data-dir',
    path.join(dir, 'cs'),
    ...sec.cacheStoreArgs,
  ]);
  const csUrl = `${sec.ws}://${cs.ready.listen}`;
  const pr = await start(path.join(ROOT, 'processor/dist/cli/sr-processor.js'), [
    '--listen',
    '127.0.0.1:0',
    '--cache-store',
    csUrl,
    '--data-dir',
    path.join(dir, 'pr'),
    ...sec.processorArgs,
  ]);
  const prUrl = `${sec.http}://${pr.ready.listen}`;
  const ag = await start(path.join(ROOT, 'agent/dist/cli/sr-agent.js'), [
    '--vm',
    'bench',
    '--disk',
    `os=${img}`,
    '--nbd',
    '127.0.0.1:0',
    '--data-dir',
    path.join(dir, 'ag'),
    '--cache-store',
    csUrl,
    '--status',
    '127.0.0.1:0',
    ...sec.agentArgs('bench'),
  ]);
  const agentStatus = () => sec.getJson(`http://${ag.ready.status}/status`);
  const vmStatus = async () =>
    (await sec.getJson(`${prUrl}/status`, { operator: true })).vms.find((v) => v.vm === 'bench');
  try {
    // Steady state: the initial copy of the (empty) disk finishes before the churn starts.
    for (;;) {
      const v = await vmStatus();
      if (v?.initialSync?.state === 'done') break;
      await sleep(100);
    }
    const daemons = { agent: ag.pid, cacheStore: cs.pid, processor: pr.pid };
    const cpu0 = Object.fromEntries(Object.entries(daemons).map(([k, pid]) => [k, cpuSeconds(pid)]));
    const t0 = Date.now();
    const sr = async (...args) =>
      JSON.parse(
        (await execFileAsync(process.execPath, [SR_CLI, '--processor', prUrl, ...sec.srArgs, ...args, '--json']))
          .stdout,
      );
    let churning = true;
    let behindMax = 0;
    const sampler = (async () => {
      while (churning) {
        const [a, v] = await Promise.all([agentStatus(), vmStatus()]);
        if (v) behindMax = Math.max(behindMax, a.lsn - v.appliedLsn);
        await sleep(250);
      }
    })();
    const drill =
      mode === 'drill'
        ? sleep((SECONDS * 1000) / 4).then(() =>
            sr('test-failover', 'bench', '--point', 'latest-processed', '--network', 'drill-net'),
          )
        : undefined;
    const { stdout: out } = await inScratchDir((cwd) =>
      execFileAsync(
        'fio',
        [
          '--output-format=json',
          '--name=churn',
          '--ioengine=nbd',
          `--uri=nbd://${ag.ready.nbd}/os`,
          '--rw=randwrite',
          '--bsrange=4k-1m',
          '--iodepth=16',
          `--size=${DISK}`,
          '--time_based',
          `--runtime=${SECONDS}`,
          ...DATA[kind],
          ...MODES[mode],
        ],
        { encoding: 'utf8', maxBuffer: 64 << 20, cwd },
      ),
    );
    const written = JSON.parse(out.slice(out.indexOf('{'))).jobs[0].write.io_bytes;
    const fioEnd = Date.now();
    churning = false;
    await sampler;
    let a, v;
    for (;;) {
      a = await agentStatus();
      v = await vmStatus();
      if (v && v.appliedLsn >= a.lsn && a.replication.stream.ackedLsn >= a.lsn) break;
      await sleep(100);
    }
    const caughtUp = Date.now();
    const cpuMsPerMB = Object.fromEntries(
      Object.entries(daemons).map(([k, pid]) => [
        k,
        +(((cpuSeconds(pid) - cpu0[k]) * 1000) / (written / 1e6)).toFixed(2),
      ]),
    );
    if (drill !== undefined) {
      await drill;
      await sr('test-failover-cleanup', 'bench');
    }
    return {
      kind,
      mode,
      security: sec.label,
      writtenMB: written / 1e6,
      fioMBps: written / 1e6 / ((fioEnd - t0) / 1000),
      replicatedMBps: written / 1e6 / ((caughtUp - t0) / 1000),
      drainSeconds: (caughtUp - fioEnd) / 1000,
      wirePerByte: a.replication.stream.bytesSent / Math.max(1, a.replication.stream.rawBytesSent),
      lagP50ms: v.lagMs?.p50,
      lagP99ms: v.lagMs?.p99,
      behindMaxRecords: behindMax,
      cpuMsPerMB,
    };
  } finally {
    await ag.stop();
    await pr.stop();
    await cs.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const rows = [];
const ratios = [];
for (const mode of Object.keys(MODES).filter((m) =>
  process.env.MODE ? process.env.MODE === m : DEFAULT_MODES.includes(m),
))
  for (const kind of Object.keys(DATA)) {
    const runs = CONFIGS.map(() => []);
    for (let i = 0; i < RUNS; i++)
      for (const [c, security] of CONFIGS.entries()) {
        const r = await runOnce(kind, mode, security);
        process.stderr.write(`${mode} ${kind} run ${i + 1}/${RUNS}: ${JSON.stringify(r)}\n`);
        runs[c].push(r);
      }
    for (const rs of runs) {
      const m = (f) => +median(rs.map(f)).toFixed(2);
      rows.push({
        mode: mode === 'max' ? mode : `${mode} ${RATE}`,
        security: rs[0].security,
        data: kind,
        replicatedMBps: m((r) => r.replicatedMBps),
        fioMBps: m((r) => r.fioMBps),
        drainSeconds: m((r) => r.drainSeconds),
        wirePerByte: m((r) => r.wirePerByte),
        lagP50ms: m((r) => r.lagP50ms),
        lagP99ms: m((r) => r.lagP99ms),
        behindMaxRecords: m((r) => r.behindMaxRecords),
        ...Object.fromEntries(Object.keys(rs[0].cpuMsPerMB).map((d) => [`cpuMsPerMB.${d}`, m((r) => r.cpuMsPerMB[d])])),
      });
    }
    if (runs.length === 2) {
      const pairs = runs[0].map((plain, i) => runs[1][i].lagP99ms / plain.lagP99ms);
      ratios.push({
        mode,
        data: kind,
        lagP99RatioPerPair: pairs.map((x) => +x.toFixed(2)).join(' '),
        lagP99RatioMedian: +median(pairs).toFixed(2),
        replicatedRatioMedian: +median(runs[0].map((p, i) => runs[1][i].replicatedMBps / p.replicatedMBps)).toFixed(3),
      });
    }
  }
console.log(
  `\nbench:e2e — median of ${RUNS} runs x ${SECONDS}s of fio randwrite 4k-1M QD16 on a ${DISK / 2 ** 30} GiB disk (fio rates are MiB/s)`,
);
console.table(rows);
if (ratios.length) {
  console.log('auth+tls / insecure, interleaved pairs:');
  console.table(ratios);
}
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(
  path.join(ROOT, 'bench/results', `e2e-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
  JSON.stringify({ configs: CONFIGS, rate: RATE, rows, ratios }, null, 2),
);
