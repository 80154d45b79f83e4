/**
 * Whether a request that adds a version to a natively versioned bucket landed although its answer was lost (the
 * policy's timeout, a cut connection, a 500). In such a bucket a PutObject, a CopyObject onto a key or a
 * DeleteObject without a VersionId is not idempotent: sent again, it adds a second version or delete marker. So
 * before the provider sends one again it asks the bucket here; both questions are asked on the attempt's own signal,
 * inside the attempt, so they share its timeout and their failures are classified like the request's.
 *
 * What stays open: an attempt abandoned at the timeout may still be in the endpoint's hands when it is looked for.
 * If it lands after the look, the resend adds a second version as before; the backoff between attempts narrows that
 * window, only S3 itself could close it.
 */
import { HeadObjectCommand, ListObjectVersionsCommand, type S3Client } from '@aws-sdk/client-s3';
import { NotFoundError } from './errors.js';
import { toStorageError } from './s3-errors.js';

/**
 * Versions of the key looked at, newest first. The lost request's version is among them unless this many other
 * writes of the key landed after it in the moments before the look.
 */
const LOOKBACK = 10;

/**
 * The version of `key` whose metadata carries every entry of `stamp` (the call's own `kyozo-*` entries: content
 * sha256, time to the millisecond, version message and author), among its newest; versions of another size are not
 * asked about.
 */
export async function findStampedVersion(
  client: S3Client,
  bucket: string,
  key: string,
  stamp: Record<string, string>,
  size: number,
  signal: AbortSignal,
): Promise<{ VersionId: string } | undefined> {
  const out = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key, MaxKeys: LOOKBACK }), { abortSignal: signal });
  for (const version of out.Versions ?? []) {
    if (version.Key !== key || version.VersionId === undefined || (version.Size !== undefined && version.Size !== size)) continue;
    const head = await client
      .send(new HeadObjectCommand({ Bucket: bucket, Key: key, VersionId: version.VersionId }), { abortSignal: signal })
      .catch((error: unknown) => (toStorageError(error, key) instanceof NotFoundError ? undefined : Promise.reject(error))); // removed meanwhile
    const metadata = head?.Metadata ?? {};
    if (head !== undefined && Object.entries(stamp).every(([name, value]) => metadata[name] === value)) return { VersionId: version.VersionId };
  }
  return undefined;
}

/**
 * Whether a DeleteObject of `key`, sent when its current version was `seen`, needs no resend: the key's newest entry
 * is a delete marker (ours, or another delete that did the same), there is none, or it is a version other than
 * `seen` (a write that landed after: a resend would delete it). `false` (send again) when the newest entry is still
 * `seen`, or when it cannot be told apart from it.
 */
export async function deleteLanded(client: S3Client, bucket: string, key: string, seen: string | undefined, signal: AbortSignal): Promise<boolean> {
  const out = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key, MaxKeys: 1 }), { abortSignal: signal });
  const entries = [
    ...(out.Versions ?? []).map((entry) => ({ ...entry, marker: false })),
    ...(out.DeleteMarkers ?? []).map((entry) => ({ ...entry, marker: true })),
  ].filter((entry) => entry.Key === key);
  if (entries.length === 0) return true;
  const newest = entries.find((entry) => entry.IsLatest) ?? (entries.length === 1 ? entries[0] : undefined);
  if (newest === undefined) return false;
  return newest.marker || (seen !== undefined && newest.VersionId !== seen);
}
