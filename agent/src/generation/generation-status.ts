import type { AgentState } from '../agent-state.js';
import type { GenerationRecord } from './generation-cause.js';
import type { PendingGeneration } from './generation-switch.js';

/** The status's `generation`: which one streams, when and why it began, and the ones before it. */
export interface GenerationStatus {
  /** The generation the journal belongs to; absent while none is (one pending, or never replicated). */
  readonly id?: string;
  /** When and why it began, when the data dir recorded it (data dirs from before keep no reason). */
  readonly startedAt?: string;
  readonly cause?: string;
  readonly message?: string;
  /** The generations before, newest first. */
  readonly previous: readonly GenerationRecord[];
  /** A new generation decided and not begun yet. */
  readonly pending?: PendingGeneration;
}

export function generationStatus(state: AgentState, pending: PendingGeneration | undefined): GenerationStatus {
  const id = state.replication?.generation;
  const history = state.generations ?? [];
  const current = id !== undefined && history[0]?.id === id ? history[0] : undefined;
  return {
    ...(id !== undefined ? { id } : {}),
    ...(current !== undefined ? { startedAt: current.startedAt, cause: current.cause, message: current.message } : {}),
    previous: current !== undefined ? history.slice(1) : history,
    ...(pending !== undefined ? { pending } : {}),
  };
}
