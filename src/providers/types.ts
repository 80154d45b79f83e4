/**
 * The provider contract (DESIGN §4). Every store is one of these; the contract suite in test/contract is its
 * executable specification.
 */
import type { Readable } from 'node:stream';

export type ProviderKind = 'disk' | 'ram' | 'git' | 's3' | 'hybrid';

/** Content as a caller may give it. Readables are consumed once and streamed, never buffered whole (disk, s3). */
export type Body = Uint8Array | string | Readable;

export interface Author {
  name: string;
  email?: string;
}

/**
 * A mutation's fence: awaited by the provider right before the step that makes the mutation visible (a rename, a
 * ref update, the request that lands on S3), after its body was read — and after its preconditions were checked,
 * except where that check and the commit must stay one synchronous step (ram, a git chain). When it throws,
 * the mutation is abandoned with nothing changed and its error passed on unchanged. A job passes a check that it
 * still holds its lock: a run that lost it (another run of the same job may have finished and a newer mutation of
 * the key landed since) must not overwrite what came after it.
 */
export interface Fenced {
  fence?: () => Promise<void>;
}

export interface WriteOptions extends Fenced {
  contentType?: string;
  metadata?: Record<string, string>;
  /**
   * Write only when the current object's etag is this one (or one of these); `'*'` matches any existing object.
   * A missing object never matches (`if-match.ts`).
   */
  ifMatch?: string | readonly string[];
  /**
   * `'*'`: write only when no object exists under the key (If-None-Match: * on a PUT, S3's conditional write); a
   * deleted object is a missing one. With `ifMatch` too, both must hold (`if-match.ts`).
   */
  ifNoneMatch?: '*';
  /**
   * The content's sha256 (hex) as the caller computed it. The provider compares it with the sha256 it computes on the
   * way in and refuses a content that differs (`INVALID_ARGUMENT`) before anything changes: a body damaged between
   * the client and the store is never stored under the etag the client was given.
   */
  expectedEtag?: string;
}

export interface ObjectInfo {
  key: string;
  size: number;
  /** sha256 (hex) of the content, on every provider. */
  etag: string;
  contentType: string;
  metadata: Record<string, string>;
  /** ISO 8601. */
  updatedAt: string;
  versionId?: string;
  /**
   * Which tier of a tiered store (hybrid) served this: `backup` means its primary was down and the answer may lag.
   * Absent on single-tier stores.
   */
  tier?: Tier;
}

export type Tier = 'hot' | 'cold' | 'backup';

export interface VersionInfo {
  versionId: string;
  key: string;
  size: number;
  etag: string;
  /** ISO 8601. */
  createdAt: string;
  message?: string;
  author?: Author;
}

export interface Capabilities {
  /** `every-write`: plain writes are recorded as versions too (git, versioned s3). */
  versioning: 'explicit' | 'every-write';
  presign: 'native' | 'signed-url';
  diff: boolean;
  branches: boolean;
  rangeReads: boolean;
  /** The author a version made without one carries (git's committer); absent when such a version has none. */
  defaultAuthor?: Author;
  /** The largest object this store takes, when it has a limit of its own (git holds objects whole in memory). */
  maxObjectBytes?: number;
}

/** Inclusive byte range, as in HTTP: [0, 0] is the first byte. */
export type ByteRange = [start: number, end: number];

export interface ReadOptions {
  versionId?: string;
  range?: ByteRange;
}

export interface ListOptions {
  prefix?: string;
  /** Opaque, from a previous page. */
  cursor?: string;
  /** Default 1000, at most 1000. */
  limit?: number;
}

export interface Page<T> {
  items: T[];
  cursor?: string;
}

export interface VersionOptions extends WriteOptions {
  message: string;
  author?: Author;
}

export interface RestoreOptions extends Fenced {
  message?: string;
  author?: Author;
}

export interface DeleteOptions extends Fenced {
  /** Remove the recorded versions too. */
  allVersions?: boolean;
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
}

export interface ProviderStats {
  kind: ProviderKind;
  objects: number;
  bytes: number;
  versions: number;
  /** Per-operation counts, errors and latency; filled by the metrics layer (`withMetrics`). */
  ops?: Record<string, { count: number; errors: number; latency: LatencySummary }>;
  /** Provider-specific figures (ram hits and misses, s3 versioning mode, git commit count...). */
  detail?: Record<string, unknown>;
}

export interface HealthReport {
  status: 'ok' | 'degraded' | 'down';
  detail: string;
  latencyMs: number;
}

export interface StorageProvider {
  readonly kind: ProviderKind;
  readonly capabilities: Capabilities;
  write(key: string, body: Body, opts?: WriteOptions): Promise<ObjectInfo>;
  read(key: string, opts?: ReadOptions): Promise<{ info: ObjectInfo; body: Readable }>;
  stat(key: string, opts?: { versionId?: string }): Promise<ObjectInfo>;
  /** Idempotent: deleting a missing key succeeds. Versions stay unless `allVersions`. */
  delete(key: string, opts?: DeleteOptions): Promise<void>;
  /** Keys in UTF-8 byte order (as S3 lists them). */
  list(opts?: ListOptions): Promise<Page<ObjectInfo>>;
  /**
   * The keys alone, paged as `list` pages them (its cursors), by a store whose `list` reads more than the names (s3
   * reads each object's head): a listing by delimiter reads only the objects it answers with.
   */
  listKeys?(opts?: ListOptions): Promise<Page<string>>;
  createVersion(key: string, body: Body, opts: VersionOptions): Promise<VersionInfo>;
  /** Newest first. */
  listVersions(key: string, opts?: { cursor?: string; limit?: number }): Promise<Page<VersionInfo>>;
  restoreVersion(key: string, versionId: string, opts?: RestoreOptions): Promise<VersionInfo>;
  /**
   * Removes one recorded version, for version retention (the cleanup job). Idempotent: a version that is not there
   * is no error. On `explicit` providers the current object stays as it is, even when it was made from that
   * version; on `every-write` providers the newest version is the current object, so callers never delete the
   * newest. Providers that cannot rewrite their history (git) leave it out.
   */
  deleteVersion?(key: string, versionId: string): Promise<void>;
  /**
   * Removes what interrupted writes left behind (a disk store's `.tmp-*` files) older than `olderThanMs`; never
   * visible to readers, only disk space. Returns how many were removed. Called by the cleanup job.
   */
  removeLeftovers?(olderThanMs: number): Promise<number>;
  /** Only providers whose `capabilities.presign` is `native`. */
  presign?(key: string, opts: { method: 'GET' | 'PUT'; expiresIn: number }): Promise<string>;
  stats(): Promise<ProviderStats>;
  health(): Promise<HealthReport>;
  close(): Promise<void>;
}

export const DEFAULT_LIST_LIMIT = 1000;
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';
