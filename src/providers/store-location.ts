/**
 * Where a store keeps its data, for refusing two stores (or two tiers of a hybrid store) that would share it: a
 * place (a bucket, the filesystem) and a path in it, as the provider will use them. Two git stores on one
 * repository, an s3 store and a hybrid store's cold tier on one bucket and prefix, a disk store named `git` around
 * the git stores' default repositories: each would read, overwrite and delete the other's objects and versions.
 */
import path from 'node:path';
import type { StoreSettings } from '../config.js';
import { normalizeS3Prefix } from './s3.js';

export interface StoreLocation {
  description: string;
  place: string;
  /** Ends with a separator, so that one location within another is a prefix of it. */
  within: string;
}

/** Undefined for in-process stores (ram) and hybrid ones, whose tiers have the locations. */
export function storeLocation(settings: StoreSettings): StoreLocation | undefined {
  switch (settings.kind) {
    case 's3': {
      const prefix = normalizeS3Prefix(settings.S3_PREFIX);
      const place = `s3 bucket "${settings.S3_BUCKET ?? ''}" at ${settings.S3_ENDPOINT ?? 'AWS'}`;
      return { description: `${place} prefix "${prefix}"`, place, within: prefix };
    }
    case 'git':
    case 'disk': {
      const dir = path.resolve(settings.kind === 'git' ? (settings.GIT_REPO_PATH ?? path.join(settings.rootDir, 'git', settings.name)) : path.join(settings.rootDir, settings.name));
      return { description: `${settings.kind === 'git' ? 'git repository' : 'directory'} ${dir}`, place: 'the filesystem', within: `${dir}${path.sep}` };
    }
    default:
      return undefined;
  }
}

/** Whether stores at `a` and `b` would read or write each other's data: the same place, one path within the other. */
export function overlaps(a: StoreLocation, b: StoreLocation): boolean {
  return a.place === b.place && (a.within.startsWith(b.within) || b.within.startsWith(a.within));
}
