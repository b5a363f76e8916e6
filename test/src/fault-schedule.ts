import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';

/** The faults a round can inject; each is described where it is injected (fault-round.ts). */
export const FAULT_KINDS = [
  'kill-agent',
  'kill-cache-store',
  'kill-processor',
  'link-cut',
  'cache-store-disk-full',
  'journal-tail-corrupt',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface PlannedFault {
  readonly kind: FaultKind;
  /** Injected once the writer has logged this many more writes than at the previous fault's end. */
  readonly afterWrites: number;
  /** Writes the writer must log while the fault holds, before the faulty part is restored. */
  readonly holdWrites: number;
  /** Seeds the fault's own choices (which journal bytes are overwritten, with what). */
  readonly seed: number;
}

export interface RoundPlan {
  readonly seed: number;
  /** Seeds the writer's choice of blocks. */
  readonly writerSeed: number;
  readonly faults: readonly PlannedFault[];
  /** Seeds which recovery points are materialised and checked. */
  readonly sampleSeed: number;
}

export interface PlanOptions {
  /** Faults per round. Default 3. */
  readonly faults?: number;
  /** The kinds to choose from. Default all of {@link FAULT_KINDS}. */
  readonly kinds?: readonly FaultKind[];
}

/** A seed for a round nobody asked a seed for, printed so that the round can be replayed. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 0x7fffffff);
}

/**
 * The round a seed stands for: which faults, in which order, at which moments. A pure function of the seed
 * and options (pure-rand's xoroshiro128+), so `SEED=...` replays the same schedule. Each kind is used at most
 * once per round until every kind was (so three faults are three different kinds).
 */
export function planRound(seed: number, options: PlanOptions = {}): RoundPlan {
  const rng = xoroshiro128plus(seed);
  const int = (from: number, to: number): number => uniformInt(rng, from, to);
  const kinds = options.kinds ?? FAULT_KINDS;
  if (kinds.length === 0) throw new Error('a round needs at least one fault kind');
  const faults: PlannedFault[] = [];
  let left = [...kinds];
  for (let i = 0; i < (options.faults ?? 3); i++) {
    if (left.length === 0) left = [...kinds];
    const kind = left.splice(int(0, left.length - 1), 1)[0]!;
    faults.push({ kind, afterWrites: int(50, 1500), holdWrites: int(100, 800), seed: int(1, 0x7fffffff) });
  }
  return { seed, writerSeed: int(1, 0x7fffffff), faults, sampleSeed: int(1, 0x7fffffff) };
}

/** `n` distinct indexes below `count` chosen by `seed` (all of them when `count <= n`), ascending. */
export function sampleIndexes(seed: number, count: number, n: number): number[] {
  const rng = xoroshiro128plus(seed);
  const all = [...Array(count).keys()];
  const chosen: number[] = [];
  while (chosen.length < Math.min(n, count)) chosen.push(all.splice(uniformInt(rng, 0, all.length - 1), 1)[0]!);
  return chosen.sort((a, b) => a - b);
}

export function describePlan(plan: RoundPlan): string {
  const faults = plan.faults.map((f) => `${f.kind}@+${f.afterWrites}w/${f.holdWrites}w`).join(', ');
  return `seed=${plan.seed} faults: ${faults}`;
}
