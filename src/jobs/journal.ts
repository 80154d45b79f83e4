/**
 * A job's journal: a record in the job's own BullMQ hash (so it lives and goes with the job) that outlives a crash
 * of the worker running it. A handler notes its result there before it releases something a retry could not get
 * back (a staged body), and a retry answers from it.
 */
export interface JobJournal {
  /** Notes that the job's work is done, with its result. */
  remember(result: unknown): Promise<void>;
  /** The result an earlier run of this job noted, if any. */
  recall(): Promise<unknown>;
  /**
   * Notes `value` under `name` unless a run noted something there before; answers what is noted (undefined when
   * nothing can be: the job's hash is gone).
   */
  noteOnce(name: string, value: string): Promise<string | undefined>;
  /** What a run noted under `name` (`noteOnce`), without noting anything. */
  noted(name: string): Promise<string | undefined>;
}
