// How many pg_dump (and pg_dumpall) processes this worker process runs at once, over all the task
// queues it polls (worker.maxConcurrentDumps). Activity slots bound steps per task queue; a dump
// is heavier than most steps (a process of its own plus a server backend), so a host polling
// several sites still runs only as many as its cores can carry. A step waiting for its turn keeps
// heartbeating (it runs inside withHeartbeat) and gives up its place when cancelled.

export class DumpSlots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`dump slots: expected a positive integer, got ${limit}`);
  }

  /** Dumps running now and steps waiting for a slot (for logs and tests). */
  get state(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  /** Runs `dump` once a slot is free; an abort while waiting rejects with the signal's reason. */
  async run<T>(signal: AbortSignal | undefined, dump: () => Promise<T>): Promise<T> {
    await this.acquire(signal);
    try {
      return await dump();
    } finally {
      this.release();
    }
  }

  private acquire(signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    if (this.running < this.limit) {
      this.running += 1;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort);
        this.running += 1;
        resolve();
      };
      const onAbort = (): void => {
        const at = this.waiting.indexOf(grant);
        if (at >= 0) this.waiting.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(grant);
    });
  }

  private release(): void {
    this.running -= 1;
    this.waiting.shift()?.();
  }
}
