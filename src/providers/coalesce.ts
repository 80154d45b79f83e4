/**
 * Overlapping calls of an expensive read share its runs: a call made while a run is in flight waits for it to end and
 * then shares the next run with every call that arrived meanwhile. Each caller gets the result of a run that started
 * after it called — it sees every write that finished before — and however many callers pile up, at most one run is
 * in flight and one waits. For `stats()`, which walks a whole store: a hundred clients polling it cost two walks at a
 * time, not a hundred.
 */
export function coalesced<T>(run: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | undefined;
  let next: Promise<T> | undefined;
  const start = (): Promise<T> => {
    const running = run().finally(() => {
      if (current === running) current = undefined;
    });
    current = running;
    return running;
  };
  return () => {
    // A queued run is joined, also between a run's end and its start: it has not started yet.
    if (next !== undefined) return next;
    if (current === undefined) return start();
    next = current
      .catch(() => undefined)
      .then(() => {
        next = undefined;
        return start();
      });
    return next;
  };
}
