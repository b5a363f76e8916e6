/**
 * Polls `check` until it returns a value other than undefined, and resolves with that value. Fails after
 * `timeoutMs` with a message naming `what` never happened, plus the last error `check` threw (a check may
 * throw while the thing it watches is not up yet). Use it instead of a fixed sleep: the test goes on as
 * soon as the event happens and says which event it was when it does not.
 */
export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 60_000,
  everyMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
