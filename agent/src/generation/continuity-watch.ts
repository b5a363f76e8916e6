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

/**
 * The cache-store refused the hello because the stream it holds of this generation is damaged: only a new
 * generation replaces it there (cache-store/README.md, "On disk").
 */
const DAMAGED_AT_CACHE_STORE = /^cache-store refused: SR_JOURNAL_CORRUPT: /;

/**
 * Calls `lost` whenever `stream` reports the stream stopped for good, or the cache-store refusing it for
 * a damaged stored stream (looked at every CONTINUITY_WATCH_MS).
 */
export function watchContinuity(
  stream: () => { readonly state: string; readonly lastError?: string | undefined } | undefined,
  lost: (reason: GenerationReason) => void,
): () => void {
  const timer = setInterval(() => {
    const s = stream();
    if (s?.state === 'failed') lost(streamReason(s.lastError));
    else if (s !== undefined && s.state !== 'streaming' && DAMAGED_AT_CACHE_STORE.test(s.lastError ?? ''))
      lost({ cause: GenerationCause.CACHE_STORE_DAMAGED, message: s.lastError! });
  }, CONTINUITY_WATCH_MS);
  timer.unref();
  return () => clearInterval(timer);
}
