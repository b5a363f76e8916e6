// npm run soak -- --rounds N [--seed S] [--faults F] [--kinds a,b,...]: the fault-injection suite's rounds
// (test/src/fault-round.ts) for long runs. Round i uses seed S+i (S: --seed, else SEED, else random, printed),
// so any round is replayed alone with `--rounds 1 --seed <its seed>` or `SEED=<its seed>` in the scenario.
// Prints each round's faults and result and a summary; exits 1 when a round failed, naming the seeds.
import { parseArgs } from 'node:util';
import { FAULT_KINDS, planRound, randomSeed, runFaultRound } from '@site-recovery/test';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '10' },
    seed: { type: 'string' },
    faults: { type: 'string', default: '3' },
    kinds: { type: 'string', default: FAULT_KINDS.join(',') },
    'keep-going': { type: 'boolean', default: true },
  },
});
const rounds = Number(values.rounds);
const first = Number(values.seed ?? process.env.SEED ?? randomSeed());
const kinds = values.kinds.split(',').filter((k) => k.length > 0);
for (const k of kinds)
  if (!FAULT_KINDS.includes(k)) throw new Error(`--kinds: unknown fault "${k}" (${FAULT_KINDS.join(', ')})`);
if (!Number.isSafeInteger(rounds) || rounds < 1)
  throw new Error(`--rounds "${values.rounds}" is not a positive integer`);
if (!Number.isSafeInteger(first)) throw new Error(`--seed "${values.seed}" is not an integer`);

console.log(`soak: ${rounds} rounds from seed ${first}, ${values.faults} faults each of ${kinds.join(', ')}`);
const started = Date.now();
const failed = [];
const durations = [];
for (let i = 0; i < rounds; i++) {
  const seed = first + i;
  const plan = planRound(seed, { faults: Number(values.faults), kinds });
  try {
    const r = await runFaultRound({ plan, log: (line) => console.log(`[${i + 1}/${rounds}] ${line}`) });
    durations.push(r.durationMs);
  } catch (err) {
    failed.push(seed);
    console.log(`[${i + 1}/${rounds}] FAILED ${err.message}`);
  }
}
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
const mean = durations.length > 0 ? Math.round(durations.reduce((a, b) => a + b, 0) / durations.length / 1000) : 0;
console.log(`soak: ${rounds - failed.length}/${rounds} rounds passed in ${minutes} min (mean round ${mean} s)`);
if (failed.length > 0) {
  console.log(`soak: failed seeds: ${failed.join(' ')} (replay one: npm run soak -- --rounds 1 --seed SEED)`);
  process.exit(1);
}
