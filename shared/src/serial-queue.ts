/**
 * Runs async tasks one at a time, in the order they were queued; a failed task does not stop the ones
 * after it (its caller gets the failure). The one form of the `serial = p.catch()` idiom.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after every task queued before it; settles as `fn` does. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** Resolves once every task queued so far has settled (never rejects). */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}

/**
 * One {@link SerialQueue} per key (a VM name, say): tasks of one key run in order, keys run
 * independently, and a key's entry is dropped once its queue is empty, so the map holds only keys
 * with work in progress.
 */
export class KeyedSerialQueue<K> {
  private readonly tails = new Map<K, Promise<unknown>>();

  run<T>(key: K, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const p = prev.then(fn, fn);
    const tail = p.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return p;
  }

  /** Keys with a task queued or running. */
  get size(): number {
    return this.tails.size;
  }

  /** Resolves once every task queued so far, of every key, has settled (never rejects). */
  async idle(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }
}
