/**
 * A state that test doubles update as events arrive (a message, an ack, a connection). The owner
 * calls `changed()` after each event and waiters re-check at once, so tests wait for the event
 * itself instead of polling or sleeping.
 */
export class Condition {
  private readonly waiters = new Set<() => void>();

  changed(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Resolves with the first value of `probe` other than undefined. A probe that throws ends the wait
   * with its error; past `timeoutMs` the failure names `what` never happened, plus `detail()`.
   */
  async until<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000, detail?: () => string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: not within ${timeoutMs} ms${detail ? `; ${detail()}` : ''}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.waiters.add(done);
      });
    }
  }
}
