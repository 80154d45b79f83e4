/**
 * The order of one key's events in a worker process. A job's event is emitted once its handler returns, but what a
 * handler does after its store committed (journal its result; a staged body is released only after the event,
 * `JobContext.afterEvent`) takes longer for some jobs than for others: a later mutation of the same key could emit
 * first, and the key's last event would name a state that is no longer current. So a job takes a turn on its key when it passes its fence — which every provider calls
 * right before the commit, under the key's lock where it has one — and emits only once every job that took a turn
 * on that key before it has emitted, or failed.
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
