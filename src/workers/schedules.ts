/**
 * The maintenance schedules (DESIGN §6), registered by every worker process at start with BullMQ job schedulers:
 * `upsertJobScheduler` with a fixed id is idempotent, so several workers starting at once leave one scheduler
 * per schedule (and one next job: its id is derived from the scheduler id and the due time).
 *
 * | scheduler         | cron          | job                     | when                                        |
 * |-------------------|---------------|-------------------------|---------------------------------------------|
 * | `tier`            | `TIER_CRON`   | `tier {}`               | a hybrid store is configured                |
 * | `cleanup`         | `CLEANUP_CRON`| `cleanup {}`            | always                                      |
 * | `backup-<store>`  | `BACKUP_CRON` | `backup { store }`      | `BACKUP_STORE` is set; every other store    |
 *
 * An empty cron turns its schedule off: schedulers of ours that the configuration no longer asks for (a cron
 * emptied, a store removed) are removed, so the last worker to start decides. Schedulers of other names are not
 * touched.
 */
import type { Config } from '../config.js';
import type { JobName, PayloadOf } from '../jobs/index.js';
import { defaultJobOptions, type JobQueues } from '../jobs/queue.js';
import type { Logger } from '../log.js';

export interface Schedule<N extends JobName = JobName> {
  id: string;
  cron: string;
  name: N;
  data: PayloadOf<N>;
}

const OURS = /^(tier|cleanup|backup-.+)$/;

/** The schedules a configuration asks for. */
export function plannedSchedules(config: Pick<Config, 'stores' | 'maintenance'>): Schedule[] {
  const { tierCron, cleanupCron, backupCron, backupStore } = config.maintenance;
  const schedules: Schedule[] = [];
  if (tierCron !== '' && config.stores.some((store) => store.kind === 'hybrid')) schedules.push({ id: 'tier', cron: tierCron, name: 'tier', data: {} });
  if (cleanupCron !== '') schedules.push({ id: 'cleanup', cron: cleanupCron, name: 'cleanup', data: {} });
  if (backupCron !== '' && backupStore !== undefined) {
    for (const store of config.stores) {
      if (store.name !== backupStore) schedules.push({ id: `backup-${store.name}`, cron: backupCron, name: 'backup', data: { store: store.name } });
    }
  }
  return schedules;
}

export async function registerSchedules(
  queues: JobQueues,
  config: Pick<Config, 'stores' | 'maintenance' | 'workers' | 'jobRetention'>,
  log: Logger,
): Promise<Schedule[]> {
  const queue = queues.queue('maintenance');
  const schedules = plannedSchedules(config);
  const { attempts, backoff, removeOnComplete, removeOnFail } = defaultJobOptions({ attempts: config.workers.attempts, retention: config.jobRetention });
  for (const schedule of schedules) {
    const next = await queue.upsertJobScheduler(schedule.id, { pattern: schedule.cron }, { name: schedule.name, data: schedule.data, opts: { attempts, backoff, removeOnComplete, removeOnFail } });
    // BullMQ answers nothing, and leaves a scheduler of that id as it was, for a pattern with no next time.
    if (next === undefined) throw new Error(`maintenance schedule ${schedule.id}: "${schedule.cron}" has no next time, so it was not registered`);
  }
  const wanted = new Set(schedules.map((schedule) => schedule.id));
  for (const scheduler of await queue.getJobSchedulers()) {
    if (scheduler.key === undefined || wanted.has(scheduler.key) || !OURS.test(scheduler.key)) continue;
    await queue.removeJobScheduler(scheduler.key);
    log.info({ scheduler: scheduler.key }, 'maintenance schedule removed: the configuration no longer asks for it');
  }
  return schedules;
}
