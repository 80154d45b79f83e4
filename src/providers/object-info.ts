/** Small questions about objects that jobs and the hybrid provider ask of any provider. */
import { NotFoundError } from './errors.js';
import type { ObjectInfo, StorageProvider, VersionInfo } from './types.js';

/** The object's (or version's) info, or undefined when there is none. */
export async function statIfPresent(provider: StorageProvider, key: string, versionId?: string): Promise<ObjectInfo | undefined> {
  try {
    return await provider.stat(key, versionId === undefined ? undefined : { versionId });
  } catch (error) {
    if (error instanceof NotFoundError) return undefined;
    throw error;
  }
}

/** Same content, content type and metadata: nothing to copy. */
export function sameObject(a: Pick<ObjectInfo, 'etag' | 'contentType' | 'metadata'>, b: Pick<ObjectInfo, 'etag' | 'contentType' | 'metadata'>): boolean {
  if (a.etag !== b.etag || a.contentType !== b.contentType) return false;
  const keys = Object.keys(a.metadata);
  return keys.length === Object.keys(b.metadata).length && keys.every((name) => a.metadata[name] === b.metadata[name]);
}

/** Every version of `key`, newest first. */
export async function allVersions(provider: StorageProvider, key: string): Promise<VersionInfo[]> {
  const versions: VersionInfo[] = [];
  let cursor: string | undefined;
  do {
    const page = await provider.listVersions(key, { cursor, limit: 1000 });
    versions.push(...page.items);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return versions;
}

/** A copied version's message: its own, or one naming where it came from (createVersion needs one). */
export function versionMessage(version: { versionId: string; message?: string }): string {
  return version.message ?? `copy of version ${version.versionId}`;
}
