/**
 * Closing BullMQ workers within a time: no new jobs, and the active ones `timeoutMs` to finish (after that their
 * locks lapse and another worker runs them). BullMQ's close waits for a Redis that answers, and so would a process
 * whose Redis is down; past the timeout the workers are disconnected instead, and that is bounded too.
 */
import type { Worker } from 'bullmq';

/** How long a disconnect may take: BullMQ's waits for the connection to end, which one still reconnecting never does. */
const DISCONNECT_WAIT_MS = 1_000;

export async function closeWorkers(workers: readonly Worker[], timeoutMs = Number.POSITIVE_INFINITY): Promise<{ timedOut: boolean }> {
  const closed = Promise.all(workers.map((worker) => worker.close())).then(() => false);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = Number.isFinite(timeoutMs)
    ? await Promise.race([closed, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)))])
    : await closed;
  clearTimeout(timer);
  if (timedOut) {
    closed.catch(() => undefined);
    await Promise.race([
      Promise.allSettled(workers.map((worker) => worker.disconnect())),
      new Promise((resolve) => setTimeout(resolve, DISCONNECT_WAIT_MS).unref()),
    ]);
  }
  return { timedOut };
}
