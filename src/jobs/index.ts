/**
 * The job registry: every job type the workers run and `enqueue` accepts. A new job type is one file exporting its
 * definition plus one line here.
 */
import type { z } from 'zod';
import { backupJob } from './backup.js';
import { cleanupJob } from './cleanup.js';
import { copyJob } from './copy-object.js';
import type { JobDefinition } from './definition.js';
import { deleteJob } from './delete.js';
import { deletePrefixJob } from './delete-prefix.js';
import { migrateJob } from './migrate.js';
import { restoreBackupJob } from './restore-backup.js';
import { restoreJob } from './restore.js';
import { tierJob } from './tier.js';
import { versionJob } from './version.js';
import { writeJob } from './write.js';

export const jobs = {
  write: writeJob,
  delete: deleteJob,
  'delete-prefix': deletePrefixJob,
  version: versionJob,
  restore: restoreJob,
  copy: copyJob,
  tier: tierJob,
  cleanup: cleanupJob,
  backup: backupJob,
  'restore-backup': restoreBackupJob,
  migrate: migrateJob,
} as const;

export type JobName = keyof typeof jobs;
export type PayloadOf<N extends JobName> = z.input<(typeof jobs)[N]['schema']>;
export type ResultOf<N extends JobName> = Awaited<ReturnType<(typeof jobs)[N]['handle']>>['result'];

export function jobDefinition(name: string): JobDefinition | undefined {
  return Object.hasOwn(jobs, name) ? (jobs[name as JobName] as unknown as JobDefinition) : undefined;
}
