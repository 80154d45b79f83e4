/**
 * Where a store keeps its data, for refusing two stores (or two tiers of a hybrid store) that would share it: a
 * place (a bucket, the filesystem) and a path in it, as the provider will use them. Two git stores on one branch of
 * one repository, an s3 store and a hybrid store's cold tier on one bucket and prefix, a disk store named `git` around
 * the git stores' default repositories: each would read, overwrite and delete the other's objects and versions.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import type { StoreSettings } from '../config.js';
import { normalizeS3Prefix } from './s3.js';

export interface StoreLocation {
  description: string;
  place: string;
  /** Ends with a separator, so that one location within another is a prefix of it. */
  within: string;
  /** A git store's branch: stores on other branches of one repository keep apart (each reads and lists its own). */
  branch?: string;
}

/** `dir` with its symbolic links resolved, as far as it exists (a store's directory may be made at its first open). */
function realDirectory(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    const parent = path.dirname(dir);
    return parent === dir ? dir : path.join(realDirectory(parent), path.basename(dir));
  }
}

/**
 * Undefined for in-process stores (ram), hybrid ones (their tiers have the locations), and an s3 store without a
 * bucket (its own error says so).
 */
export function storeLocation(settings: StoreSettings): StoreLocation | undefined {
  switch (settings.kind) {
    case 's3': {
      if (settings.S3_BUCKET === undefined) return undefined;
      const prefix = normalizeS3Prefix(settings.S3_PREFIX);
      const place = `s3 bucket "${settings.S3_BUCKET}" at ${settings.S3_ENDPOINT ?? 'AWS'}`;
      return { description: `${place} prefix "${prefix}"`, place, within: prefix };
    }
    case 'git':
    case 'disk': {
      const dir = realDirectory(
        path.resolve(settings.kind === 'git' ? (settings.GIT_REPO_PATH ?? path.join(settings.rootDir, 'git', settings.name)) : path.join(settings.rootDir, settings.name)),
      );
      if (settings.kind === 'disk') return { description: `directory ${dir}`, place: 'the filesystem', within: `${dir}${path.sep}` };
      return { description: `git repository ${dir} branch ${settings.GIT_BRANCH}`, place: 'the filesystem', within: `${dir}${path.sep}`, branch: settings.GIT_BRANCH };
    }
    default:
      return undefined;
  }
}

/** Whether stores at `a` and `b` would read or write each other's data: the same place, one path within the other. */
export function overlaps(a: StoreLocation, b: StoreLocation): boolean {
  if (a.place !== b.place) return false;
  if (a.within === b.within && a.branch !== undefined && b.branch !== undefined) return a.branch === b.branch;
  return a.within.startsWith(b.within) || b.within.startsWith(a.within);
}
