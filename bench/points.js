// npm run bench:points — cost of recovery-point operations on the processor's file store, on a
// 1 GiB and a 32 GiB sparse replica: cutting a point, pruning the oldest, and failing over
// (materializing) to the latest point and to the point 120 points back under steady churn.
// Churn is generated straight into the store (no network) so the figures are the point machinery's.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FileReplicaStore } from '@site-recovery/processor';
import { ROOT, benchDir, median } from './lib.js';

const GiB = 1024 ** 3;
const BLOCK = 64 * 1024;
const POINTS = Number(process.env.POINTS ?? 120); // e.g. 10 minutes of points every 5 s
const WRITES_PER_POINT = Number(process.env.WRITES_PER_POINT ?? 40); // 64 KiB each: 2.5 MiB changed per point
const HOT_SET = 2 * GiB; // churn lands in the first 2 GiB (or the whole disk if smaller)
const payload = randomBytes(BLOCK);

async function benchDisk(size) {
  const dir = benchDir(`points-${size / GiB}g`);
  const store = new FileReplicaStore(path.join(dir, 'data'));
  const r = await store.create('bench', 'g1', [{ id: 'os', size }]);
  await r.savePosition({ appliedLsn: 0, initialSync: { state: 'done', done: 1, total: 1 } });
  let lsn = 0;
  const hot = Math.min(HOT_SET, size) / BLOCK;
  const churn = async (n) => {
    for (let i = 0; i < n; i++) {
      const rec = {
        lsn: ++lsn,
        kind: 1,
        disk: 0,
        offset: Math.floor(Math.random() * hot) * BLOCK,
        length: BLOCK,
        data: payload,
      };
      await r.points.protect([rec], 'g1');
      await r.apply(rec);
    }
  };
  const cuts = [];
  for (let p = 0; p < POINTS; p++) {
    await churn(WRITES_PER_POINT);
    await r.flush?.();
    const t = performance.now();
    await r.points.cut({ lsn, generation: 'g1', kind: 'crash', time: new Date() });
    cuts.push(performance.now() - t);
  }
  await churn(WRITES_PER_POINT);
  const list = r.points.list();
  const materialize = async (point) => {
    const target = path.join(dir, `restore-${point.id}.img`);
    const t = performance.now();
    await r.points.materialize(r.points.plan(point.id), [target]);
    const ms = performance.now() - t;
    fs.rmSync(target, { force: true });
    return ms;
  };
  const latestMs = await materialize(list.at(-1));
  const backMs = await materialize(list[0]);
  const prunes = [];
  for (let i = 0; i < Math.min(20, list.length - 1); i++) {
    const oldest = r.points.list()[0];
    const t = performance.now();
    await r.points.remove([oldest.id], true);
    prunes.push(performance.now() - t);
  }
  await r.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return {
    disk: `${size / GiB} GiB`,
    cutMs: +median(cuts).toFixed(2),
    pruneOldestMs: +median(prunes).toFixed(2),
    failoverLatestMs: Math.round(latestMs),
    [`failover${POINTS}PointsBackMs`]: Math.round(backMs),
    undoMiBPerPoint: +((WRITES_PER_POINT * BLOCK) / 2 ** 20).toFixed(1),
  };
}

const rows = [];
for (const size of [1 * GiB, 32 * GiB]) rows.push(await benchDisk(size));
console.log(
  `\nbench:points — ${POINTS} points, ${WRITES_PER_POINT} random 64 KiB writes between points (hot set ${HOT_SET / GiB} GiB); medians of ${POINTS} cuts and 20 prunes`,
);
console.table(rows);
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(
  path.join(ROOT, 'bench/results', `points-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
  JSON.stringify({ rows }, null, 2),
);
