import { GenerationCause, type GenerationReason } from './generation-cause.js';

/**
 * How often the stream's state is looked at for a lost continuity. The shipper stops for good when the
 * cache-store's position is not one its journal continues from; this turns that into a new generation
 * within this time. Its other failures it retries by itself.
 */
export const CONTINUITY_WATCH_MS = 1000;

/**
 * Why the stream stopped for good, as a generation's reason: the shipper's own message (SR_SEQUENCE,
 * naming both positions), without its advice to restart with --resync, which the agent now follows by
 * itself.
 */
export function streamReason(lastError: string | undefined): GenerationReason {
  const message = (lastError ?? 'the stream stopped for good').replace(/;\s*restart the agent with --resync.*$/s, '');
  return {
    cause: /this journal starts at LSN/.test(message)
      ? GenerationCause.CACHE_STORE_BEHIND
      : GenerationCause.CACHE_STORE_AHEAD,
    message,
  };
}

/** Calls `lost` whenever `streamFailure` reports the stream stopped for good (every CONTINUITY_WATCH_MS). */
export function watchContinuity(
  streamFailure: () => { readonly failed: boolean; readonly lastError?: string | undefined } | undefined,
  lost: (reason: GenerationReason) => void,
): () => void {
  const timer = setInterval(() => {
    const s = streamFailure();
    if (s?.failed === true) lost(streamReason(s.lastError));
  }, CONTINUITY_WATCH_MS);
  timer.unref();
  return () => clearInterval(timer);
}
