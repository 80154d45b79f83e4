/**
 * The second way a `?wait=true` hears that its job finished. The first is BullMQ's events stream, which is capped:
 * under thousands of jobs a second it can move past a listener that fell behind, taking a job's completion with it.
 * So every `FINISHED_CHECK_MS` one pipeline asks Redis, for every job waited for on the queue, whether it is in the
 * queue's completed or failed set: two ZSCOREs a job, constant time however long the backlog. No tick is sent while
 * the last one is unanswered (a stalled Redis gets no pile of them), and a failed one is forgotten: the listener
 * still listens, and the next tick asks again.
 */
import type { Queue } from 'bullmq';
import type { RedisConnection } from '../redis.js';

const FINISHED_CHECK_MS = 1_000;

export class FinishedPoller {
  /** Job id → what to call once it finished (several waits may wait for one job). */
  private readonly watched = new Map<string, Set<() => void>>();
  private timer: NodeJS.Timeout | undefined;
  private asking = false;
  private closed = false;

  constructor(
    private readonly queue: Pick<Queue, 'keys'>,
    /** A connection that fails fast (the producer's): a tick while Redis is away fails at once, and is forgotten. */
    private readonly redis: RedisConnection,
  ) {}

  /** Calls `onFinished` once the job is seen finished; the returned function stops watching (call it either way). */
  watch(jobId: string, onFinished: () => void): () => void {
    let waits = this.watched.get(jobId);
    if (waits === undefined) this.watched.set(jobId, (waits = new Set()));
    waits.add(onFinished);
    // Closed (the waiter's `close` raced a wait's setup): that wait still has its listener and its deadline.
    if (!this.closed) this.timer ??= setInterval(() => void this.ask(), FINISHED_CHECK_MS).unref();
    return () => {
      waits.delete(onFinished);
      if (waits.size === 0 && this.watched.get(jobId) === waits) this.watched.delete(jobId);
      if (this.watched.size === 0) this.stop();
    };
  }

  /** Stops asking until the next watch; `close` for good. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.closed = true;
    this.stop();
  }

  private async ask(): Promise<void> {
    if (this.asking) return;
    this.asking = true;
    const jobIds = [...this.watched.keys()];
    try {
      const pipeline = this.redis.pipeline();
      for (const jobId of jobIds) pipeline.zscore(this.queue.keys.completed!, jobId).zscore(this.queue.keys.failed!, jobId);
      const replies = (await pipeline.exec()) ?? [];
      jobIds.forEach((jobId, i) => {
        const finished = replies[2 * i]?.[1] != null || replies[2 * i + 1]?.[1] != null;
        if (finished) for (const onFinished of [...(this.watched.get(jobId) ?? [])]) onFinished();
      });
    } catch {
      // Redis away or failing: the events listener may still hear of it, and the next tick asks again.
    } finally {
      this.asking = false;
    }
  }
}
