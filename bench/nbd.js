// npm run bench:nbd — fio against the agent (capture and journal on) and against qemu-nbd serving the
// same kind of image on the same disk, runs interleaved, median of RUNS. Not a test: it prints figures.
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, benchDir, dropCaches, fio, freePort, median, nodeFlagsOf, startServer } from './lib.js';

const RUNS = Number(process.env.RUNS ?? 5);
const SECONDS = Number(process.env.SECONDS_PER_RUN ?? 8);
const SIZE = 1 << 30;
const JOBS = {
  'randwrite 4k QD32': ['--rw=randwrite', '--bs=4k', '--iodepth=32', `--size=${SIZE}`, `--runtime=${SECONDS}`],
  'write 1M QD16': ['--rw=write', '--bs=1M', '--iodepth=16', `--size=${SIZE}`, `--runtime=${SECONDS}`],
};

const dir = benchDir('nbd');
const agentImg = path.join(dir, 'agent.img');
const qemuImg = path.join(dir, 'qemu.img');

async function withAgent(fn) {
  fs.rmSync(path.join(dir, 'agent-data'), { recursive: true, force: true });
  const port = await freePort();
  const cli = path.join(ROOT, 'agent/dist/cli/sr-agent.js');
  const s = await startServer(
    process.execPath,
    [
      ...nodeFlagsOf(cli),
      cli,
      '--vm',
      'bench',
      '--disk',
      `d0=${agentImg}`,
      '--nbd',
      `127.0.0.1:${port}`,
      '--data-dir',
      path.join(dir, 'agent-data'),
    ],
    port,
    { SR_LOG_LEVEL: 'warn' },
  );
  try {
    return fn(`nbd://127.0.0.1:${port}/d0`);
  } finally {
    await s.stop();
  }
}

async function withQemuNbd(fn) {
  const port = await freePort();
  const s = await startServer(
    'qemu-nbd',
    ['-f', 'raw', '-x', 'd0', '-b', '127.0.0.1', '-p', String(port), '--persistent', qemuImg],
    port,
  );
  try {
    return fn(`nbd://127.0.0.1:${port}/d0`);
  } finally {
    await s.stop();
  }
}

const results = {};
let dropped = true;
// JOB=seq or JOB=rand runs one of them (a substring of the job's name).
const only = process.env.JOB;
for (const [name, job] of Object.entries(JOBS)) {
  if (only !== undefined && !name.includes(only === 'seq' ? 'write 1M' : only === 'rand' ? 'randwrite' : only))
    continue;
  results[name] = { agent: [], qemu: [] };
  for (let i = 0; i < RUNS; i++) {
    // Fresh sparse images each run, so both sides start from the same state.
    for (const f of [agentImg, qemuImg]) {
      fs.writeFileSync(f, '');
      fs.truncateSync(f, SIZE);
    }
    dropped &&= dropCaches();
    results[name].agent.push(await withAgent((uri) => fio(uri, job)));
    dropped &&= dropCaches();
    results[name].qemu.push(await withQemuNbd((uri) => fio(uri, job)));
    process.stderr.write(
      `${name} run ${i + 1}/${RUNS}: agent ${results[name].agent.at(-1).iops.toFixed(0)} IOPS, qemu-nbd ${results[name].qemu.at(-1).iops.toFixed(0)} IOPS\n`,
    );
  }
}

const rows = Object.entries(results).map(([name, r]) => {
  const a = { iops: median(r.agent.map((x) => x.iops)), mbps: median(r.agent.map((x) => x.mbps)) };
  const q = { iops: median(r.qemu.map((x) => x.iops)), mbps: median(r.qemu.map((x) => x.mbps)) };
  return {
    job: name,
    agentIops: Math.round(a.iops),
    agentMBps: Math.round(a.mbps),
    qemuNbdIops: Math.round(q.iops),
    qemuNbdMBps: Math.round(q.mbps),
    ratio: +(a.iops / q.iops).toFixed(2),
  };
});
console.log(
  `\nbench:nbd — median of ${RUNS} runs x ${SECONDS}s, images in ${dir}; page cache ${dropped ? 'dropped before each run' : "NOT dropped (not root): runs inherit the previous run's memory state"}`,
);
console.table(rows);
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(
  path.join(ROOT, 'bench/results', `nbd-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
  JSON.stringify({ runs: RUNS, seconds: SECONDS, dir, droppedCaches: dropped, results, rows }, null, 2),
);
fs.rmSync(dir, { recursive: true, force: true });
