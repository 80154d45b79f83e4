/**
 * Turns on a key, in the order they were taken: a place taken now, waited for later, left later still. Named
 * mutexes are built on it (`process-mutex.ts`: take, wait, run, leave), and so is the order of one key's events in a
 * worker (`workers/worker.ts`): a job takes its turn when it passes its fence — which every provider calls right
 * before the commit — and emits once every earlier turn on the key has left, so that a job slower between its commit
 * and its event (it journals its result) cannot let a later mutation of the key emit first.
 */

/** A job's place among the jobs of one key. */
export interface KeyTurn {
  /** Settles when every earlier turn on the key has left; undefined when there was none. */
  readonly ready: Promise<void> | undefined;
  /** Leaves the key to the next turn: after the event was written, or when the job failed. Idempotent. */
  leave(): void;
}

export class KeyTurns {
  /** Per key, the last turn's end: settled once it and every turn before it have left. */
  private readonly last = new Map<string, Promise<void>>();

  take(key: string): KeyTurn {
    const before = this.last.get(key);
    let leave!: () => void;
    const left = new Promise<void>((resolve) => (leave = resolve));
    const end = before === undefined ? left : before.then(() => left);
    this.last.set(key, end);
    // Forgotten once nobody came after it: the map holds only keys with jobs in flight.
    void end.then(() => {
      if (this.last.get(key) === end) this.last.delete(key);
    });
    return { ready: before, leave };
  }

  /** Keys with turns not yet left (for tests). */
  get size(): number {
    return this.last.size;
  }
}
