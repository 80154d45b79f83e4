/**
 * The backup layout inside a backup store, and the manifest that describes one backup run.
 *
 *   backups/<store>/blobs/<sha256>          content, addressed by its etag: a blob already there is never copied
 *                                           again (that is what makes a backup incremental, and dedups across keys
 *                                           and versions of one store)
 *   backups/<store>/manifests/<id>.json     one per run: every key with etag, size, content type and metadata
 *
 * Manifest ids are version ids (`newVersionId`): sortable by time, so the newest manifest is the greatest key.
 * A backup store may hold other data too; keys of this layout are recognised by `isBackupKey` (exactly: a manifest
 * id must be a version id), and a backup of the backup store leaves them out, so backing it up elsewhere never
 * copies backups of backups.
 */
import { z } from 'zod';
import { readAll } from '../providers/body.js';
import { InvalidArgumentError } from '../providers/errors.js';
import type { StorageProvider } from '../providers/types.js';
import { isVersionId } from '../providers/version-id.js';

export const BACKUP_ROOT = 'backups/';
const MANIFEST_KEY = /^backups\/([a-z0-9][a-z0-9_-]{0,62})\/manifests\/([0-9a-z]+)\.json$/;
const BLOB_KEY = /^backups\/[a-z0-9][a-z0-9_-]{0,62}\/blobs\/[0-9a-f]{64}$/;

export const blobPrefix = (store: string) => `${BACKUP_ROOT}${store}/blobs/`;
export const blobKey = (store: string, etag: string) => `${blobPrefix(store)}${etag}`;
export const manifestPrefix = (store: string) => `${BACKUP_ROOT}${store}/manifests/`;
export const manifestKey = (store: string, id: string) => `${manifestPrefix(store)}${id}.json`;

export function isBackupKey(key: string): boolean {
  return BLOB_KEY.test(key) || parseManifestKey(key) !== undefined;
}

/** The backed-up store and manifest id a manifest key names, or undefined for anything else. */
export function parseManifestKey(key: string): { store: string; id: string } | undefined {
  const match = MANIFEST_KEY.exec(key);
  return match && isVersionId(match[2]!) ? { store: match[1]!, id: match[2]! } : undefined;
}

const etag = z.string().regex(/^[0-9a-f]{64}$/);
const authorSchema = z.object({ name: z.string(), email: z.string().optional() });

const objectEntry = z.object({
  key: z.string(),
  etag,
  size: z.number().int().nonnegative(),
  contentType: z.string(),
  metadata: z.record(z.string(), z.string()),
  updatedAt: z.string().optional(),
});

const versionEntry = z.object({
  key: z.string(),
  versionId: z.string(),
  etag,
  size: z.number().int().nonnegative(),
  contentType: z.string(),
  metadata: z.record(z.string(), z.string()),
  createdAt: z.string(),
  message: z.string().optional(),
  author: authorSchema.optional(),
});

export const manifestSchema = z.object({
  id: z.string(),
  /** ISO time the run started. */
  at: z.string(),
  store: z.string(),
  objects: z.array(objectEntry),
  /** Oldest first per key, when the backup was asked to include versions. */
  versions: z.array(versionEntry).optional(),
  /** Blobs that failed verification in this run (removed, so the next run copies them again). */
  unverified: z.array(etag).default([]),
});

export type Manifest = z.output<typeof manifestSchema>;
export type ManifestObject = z.output<typeof objectEntry>;
export type ManifestVersion = z.output<typeof versionEntry>;

export async function writeManifest(target: StorageProvider, manifest: Manifest, fence?: () => Promise<void>): Promise<string> {
  const key = manifestKey(manifest.store, manifest.id);
  await target.write(key, JSON.stringify(manifest), { contentType: 'application/json', fence });
  return key;
}

export async function readManifest(target: StorageProvider, key: string): Promise<Manifest> {
  const { body } = await target.read(key);
  const text = (await readAll(body)).toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InvalidArgumentError(`"${key}" is not a backup manifest: not JSON`, { cause: error });
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) throw new InvalidArgumentError(`"${key}" is not a backup manifest: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/** Manifest keys of `store`'s backups in `target`, newest first. */
export async function listManifests(target: StorageProvider, store: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await target.list({ prefix: manifestPrefix(store), cursor });
    keys.push(...page.items.map((item) => item.key).filter((key) => parseManifestKey(key) !== undefined));
    cursor = page.cursor;
  } while (cursor !== undefined);
  return keys.sort().reverse();
}

/** Every blob a manifest needs. */
export function manifestEtags(manifest: Manifest): Set<string> {
  const etags = new Set(manifest.objects.map((entry) => entry.etag));
  for (const version of manifest.versions ?? []) etags.add(version.etag);
  return etags;
}
