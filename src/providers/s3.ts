/**
 * The s3 provider (DESIGN §5): one bucket (+ optional key prefix) per store, on `@aws-sdk/client-s3`. Every
 * request goes through one resilience policy (`resilience.ts`); S3 failures become contract errors in
 * `s3-errors.ts`. Decisions, and why:
 *
 * - Layout. Object `k` lives at `<S3_PREFIX>k`, so other S3 tools see the store's objects under their own keys.
 *   `<S3_PREFIX>.kyozo/` is reserved: explicit versions under `.kyozo/versions/<sha256(k)>/<rid>` and staged
 *   uploads under `.kyozo/tmp/`. User keys starting with `.kyozo/` are rejected (`InvalidKeyError`) rather than
 *   escaped, so no user key can ever collide with them and a key means the same on every S3 tool. Hashing the
 *   key keeps version keys short (a 1,024-byte user key still fits S3's key limit) and makes one key's versions
 *   a plain prefix (no delimiter tricks: the versions of `a` and of `a/b` never share a prefix). `<rid>` is the
 *   version id with every character mirrored in its alphabet, so S3's ascending listing is newest first and
 *   `listVersions` pages with `StartAfter` like any other listing.
 * - Versioning (`S3_VERSIONING`): `native` or `explicit` is taken as given, without asking the bucket. `auto` (the
 *   default) asks GetBucketVersioning once (`Enabled` = native, anything else = explicit; an answer that refuses the
 *   question, such as AccessDenied or NotImplemented, = explicit with a warning). When S3 cannot be reached at start
 *   (or the bucket does not exist yet) no mode is guessed: a worker restarted during an outage would otherwise write
 *   explicit version objects into a versioned bucket that the web process reads as native. The mode stays unknown,
 *   every call that needs it asks the bucket again first and fails as unavailable while it cannot, and `health()`
 *   asks too, so the mode is settled as soon as S3 answers once. Presigning needs no mode.
 *   Native (`every-write`): version id = S3 VersionId, message and author in that version's metadata. A
 *   `listVersions` cursor names the page's last version, S3's time of it and the version after it, so the next page
 *   starts where it should when the version named was deleted meanwhile (`nativeVersionsAfter`).
 *   Explicit: `createVersion` puts the version object first, then server-side copies it over the current key
 *   (one upload of the body), and the current object carries `kyozo-version`. Its id is minted before the upload,
 *   so versions made at once finish out of order: the copies onto one key run one at a time and one older than a
 *   version made current meanwhile is not copied (`versions-in-flight.ts`, as disk does), so the newest listed
 *   version is the current object. Within one process, like disk: two processes sharing a bucket are not ordered.
 * - etag = sha256 of the content, in `x-amz-meta-kyozo-sha256` (S3's ETag is an MD5, or not even that for
 *   multipart). User metadata is `x-amz-meta-<name>`, values percent-encoded only where HTTP headers cannot carry
 *   them (non-ASCII, `%`, edge spaces), so ASCII metadata reads the same to any S3 client. Names starting with
 *   `kyozo-` are reserved (`s3-metadata.ts`). An object without `kyozo-sha256` (uploaded through a presigned PUT or another tool) is
 *   adopted on first sight: read once to hash it, then copied onto itself with the hash added.
 * - Writes. Metadata travels with the first byte, the sha256 is known only after the last. A body up to
 *   `S3_MULTIPART_THRESHOLD` is held in memory (a Uint8Array/string already is; a stream is read ahead at most that
 *   far), hashed, and sent as ONE PutObject: small writes cost one request. A longer body goes through a
 *   HashingStream into a lib-storage multipart upload (bounded part queue) at `.kyozo/tmp/<id>`, then one
 *   CopyObject puts it at its key with the hash in its metadata, then the staged copy is deleted. A crash between
 *   leaves only a staged object (or an incomplete upload), never a half-written or unhashed one at the key; the
 *   cleanup job removes such leftovers after `STAGING_TTL` (`removeLeftovers`). CopyObject takes at most 5 GiB (= MAX_OBJECT_BYTES).
 * - ifMatch compares our etag from a HeadObject, then sends the write with `If-Match: <S3 ETag seen>`. AWS S3
 *   and MinIO then refuse the write if the object changed in between (412); servers that ignore conditional
 *   writes (s3rver) leave a window of one round trip in which a writer in another process, or one without
 *   conditions, can be overwritten. In one process, the steps that make mutations of a key current (check, fence,
 *   request) run one at a time (`committed`).
 * - ifNoneMatch ('*', create-only) is checked by the same HeadObject (an existing object fails at once), and the
 *   write that makes the object current carries S3's own `If-None-Match: *`: the PutObject of a body up to the
 *   threshold, and the CopyObject of a staged upload (every larger body, buffer or stream) or of an explicit version.
 *   Its atomicity against concurrent writers relies on S3's conditional writes (412, or 409
 *   ConditionalRequestConflict for a race S3 itself detects: both are PreconditionFailedError, `s3-errors.ts`). On
 *   servers that ignore them (s3rver) the HeadObject is only a best-effort check: two concurrent create-only writes
 *   may both land, the later overwriting the earlier.
 * - `S3_CHECKSUM` sets the SDK's requestChecksumCalculation/responseChecksumValidation (default: the SDK's,
 *   WHEN_SUPPORTED). The provider only ever sends buffers (PutObject, UploadPart), never a streamed PutObject,
 *   which some servers (s3rver) would store with its aws-chunked framing; WHEN_REQUIRED is for servers that refuse
 *   the checksum headers. Presigned URLs are always signed without a checksum (a signed CRC32 of an empty body
 *   would make every presigned upload fail).
 * - Resends in native mode. A PutObject, a CopyObject onto a key or a DeleteObject (no VersionId) adds a version or
 *   delete marker each time it lands, so the policy's resend after an attempt that landed but whose answer was lost
 *   (timeout, cut connection, 500) would add a second one. Each attempt after the first therefore first looks for
 *   the earlier one (`s3-landed.ts`: a version carrying this call's own `kyozo-*` entries; for a delete, the key's
 *   newest entry no longer the version seen before it) and answers with it; it sends again only when none landed,
 *   and fails unavailable (outcome unknown) when the bucket cannot be asked. Explicit mode overwrites plain keys:
 *   a resend there is harmless and stays blind.
 * - `list` pages over ListObjectsV2 (continuation tokens inside a call, our cursor = the last key returned, used as
 *   `StartAfter`), skipping the reserved prefix in one jump, and HEADs every item (bounded concurrency) because
 *   listings carry no user metadata.
 */
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  type HeadObjectCommandOutput,
  type ListObjectVersionsCommandOutput,
  type ListObjectsV2CommandOutput,
  type ObjectIdentifier,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { nowIso } from '../clock.js';
import { ConfigError, storeEnvPrefix, type StoreSettings } from '../config.js';
import type { Logger } from '../log.js';
import { HashingStream, isReadable, readAhead, requireExpectedEtag, resolveRange, sha256Hex } from './body.js';
import { decodeCursor, decodeVersionsCursor, encodeCursor, encodeVersionsCursor, pageLimit } from './cursor.js';
import {
  InvalidArgumentError,
  InvalidKeyError,
  NotFoundError,
  NotSupportedError,
  PermissionDeniedError,
  PreconditionFailedError,
  ProviderUnavailableError,
  StorageError,
} from './errors.js';
import { passFence } from './fence.js';
import { hasPreconditions, requireIfMatch, requireIfNoneMatch, type Preconditions } from './if-match.js';
import { compareKeys, validateKey, validatePrefix } from './keys.js';
import { withProcessMutex } from './process-mutex.js';
import { createResiliencePolicy, type CallOptions, type ResilienceOptions, type ResiliencePolicy } from './resilience.js';
import { mapLimit } from './map-limit.js';
import { META, SHA256_SHAPE, decodeMetaValue, describeS3Write, parseAuthor, requireMetadataFits, restoreMetadata, stampOf, storedUserMetadata, userMetadata, versionMetadata } from './s3-metadata.js';
import { cutToRange } from './s3-range.js';
import { limitIdleWaits } from './s3-body.js';
import { toStorageError } from './s3-errors.js';
import { deleteLanded, findStampedVersion } from './s3-landed.js';
import {
  DEFAULT_CONTENT_TYPE,
  type Author,
  type Body,
  type Capabilities,
  type DeleteOptions,
  type Fenced,
  type HealthReport,
  type ObjectInfo,
  type Page,
  type ProviderStats,
  type ReadOptions,
  type RestoreOptions,
  type StorageProvider,
  type VersionInfo,
  type VersionOptions,
  type WriteOptions,
} from './types.js';
import { ALPHABET, isVersionId, newVersionId } from './version-id.js';
import { VersionsInFlight, type MakeCurrent } from './versions-in-flight.js';

/**
 * A reader that takes nothing for this many `socketTimeoutMs` (5 minutes by default) lets its body go: a paused
 * download resumes within it, while readers that stopped for good do not keep the read client's connections.
 */
const PAUSED_READ_FACTOR = 10;

const MIB = 1024 * 1024;
const RESERVED = '.kyozo/';
const VERSIONS = `${RESERVED}versions/`;
const STAGING = `${RESERVED}tmp/`;
/** Sorts after every key the provider writes under `.kyozo/` (all `[0-9a-z/-]`): one StartAfter skips them all. */
const RESERVED_END = `${RESERVED}~`;
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600; // SigV4 limit
const BUCKET_CHECK_MS = 10_000;

/** What `put` checks before the request that lands: the content's expected sha256, then the fence. */
type CommitChecks = Fenced & Pick<WriteOptions, 'expectedEtag'>;

/** The conditional headers of the request that makes a write current: S3's ETag seen (If-Match), create-only. */
interface S3Conditions {
  IfMatch?: string;
  IfNoneMatch?: '*';
}

/** Checks a write's preconditions against the current object; says what S3 should check again when it lands. */
type PreconditionCheck = () => Promise<S3Conditions | undefined>;

/**
 * A write carrying If-Match or If-None-Match is not sent again by the policy: a first attempt that landed but
 * answered late would make the second fail with 412 against its own write. The caller gets "unavailable" (outcome
 * unknown) instead; a write job then retries and recognises its own content (`jobs/write.ts`).
 */
function conditional(conditions: S3Conditions | undefined): CallOptions {
  return conditions?.IfMatch === undefined && conditions?.IfNoneMatch === undefined ? {} : { retry: false };
}

/**
 * S3 answers a write whose If-Match names an object deleted since our check with 404 NoSuchKey: for the caller, the
 * object it named is not current, a failed precondition like any other (disk and ram say so too). A copy's 404 may
 * also be its source's: `targetStillNamed` then tells which (true: the target is still the object If-Match named).
 */
function refusedIfGone(what: string, conditions: S3Conditions | undefined, targetStillNamed?: () => Promise<boolean>): (error: unknown) => Promise<never> {
  return async (error) => {
    if (conditions?.IfMatch !== undefined && error instanceof NotFoundError && !(await targetStillNamed?.().catch(() => true))) {
      throw new PreconditionFailedError(`${what}: the object ifMatch names was deleted meanwhile`, { cause: error });
    }
    throw error;
  };
}

export type S3VersioningMode = 'native' | 'explicit';

export interface S3ProviderOptions {
  bucket: string;
  /** Key prefix inside the bucket; normalized to '' or `something/`. */
  prefix?: string;
  region?: string;
  endpoint?: string;
  /**
   * The endpoint presigned URLs name, when clients reach S3 by another address than the service does (compose:
   * `http://minio:9000` inside, `http://localhost:9000` outside). Signing is local: nothing is sent there.
   */
  publicEndpoint?: string;
  forcePathStyle?: boolean;
  /** `WHEN_REQUIRED` for servers that store aws-chunked framing verbatim (s3rver); SDK default otherwise. */
  checksum?: 'WHEN_SUPPORTED' | 'WHEN_REQUIRED';
  /** Bodies longer than this go through a multipart upload. Default 16 MiB. */
  multipartThreshold?: number;
  /** Multipart part size (min 5 MiB) and parts in flight: memory per upload is at most their product. */
  partSize?: number;
  queueSize?: number;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, roles). */
  credentials?: S3ClientConfig['credentials'];
  /** `auto` (default) asks the bucket (see the file comment); the others force a mode (S3_VERSIONING, tests, buckets you cannot query). */
  versioning?: 'auto' | S3VersioningMode;
  /** Overrides of the resilience policy (timeouts, retries, breaker), or a policy shared with other providers. */
  resilience?: Partial<Omit<ResilienceOptions, 'classify' | 'name'>> | ResiliencePolicy;
  healthTimeoutMs?: number;
  /**
   * A connection on which nothing moves for this long fails: a response body that stalls mid-stream errors instead
   * of hanging (the policy's timeout ends when the headers arrive). Idle time, so a long transfer that flows is never
   * cut; a read's body counts it only while its reader waits for data (`s3-body.ts`). Default 30 s.
   */
  socketTimeoutMs?: number;
  /** HEADs in flight while listing. Default 16. */
  listConcurrency?: number;
  /** Keys a `stats()` call looks at, at most. Default 100,000. */
  statsScanLimit?: number;
  name?: string;
  log?: Logger;
}

/** What an s3 store's settings say, or a `ConfigError` naming the missing variable. */
export function s3OptionsFromSettings(settings: StoreSettings, log?: Logger): S3ProviderOptions {
  if (settings.S3_BUCKET === undefined) {
    throw new ConfigError(`store "${settings.name}": S3_BUCKET (or ${storeEnvPrefix(settings.name)}S3_BUCKET) is required for an s3 store`);
  }
  return {
    name: settings.name,
    bucket: settings.S3_BUCKET,
    prefix: settings.S3_PREFIX,
    region: settings.AWS_REGION,
    endpoint: settings.S3_ENDPOINT,
    publicEndpoint: settings.S3_PUBLIC_ENDPOINT,
    forcePathStyle: settings.S3_FORCE_PATH_STYLE,
    checksum: settings.S3_CHECKSUM,
    multipartThreshold: settings.S3_MULTIPART_THRESHOLD,
    versioning: settings.S3_VERSIONING,
    log,
  };
}

export async function createS3Provider(options: S3ProviderOptions): Promise<S3Provider> {
  const provider = new S3Provider(options);
  await provider.detectVersioning(options.versioning ?? 'auto');
  return provider;
}

/** The factory line of `index.ts`. */
export function createS3ProviderFromSettings(settings: StoreSettings, log?: Logger): Promise<S3Provider> {
  return createS3Provider(s3OptionsFromSettings(settings, log));
}

// ---- explicit version keys ----

const MIRROR = new Map([...ALPHABET].map((c, i) => [c, ALPHABET[ALPHABET.length - 1 - i]!]));

/** Version id <-> its name under the key's version prefix; the mirror makes ascending order newest first. */
function mirrorId(id: string): string {
  let out = '';
  for (const c of id) out += MIRROR.get(c) ?? c;
  return out;
}

// ---- small helpers ----

/** The headers S3 keeps with an object besides its type and `x-amz-meta-*`; ours never set them, other uploaders may. */
type ContentHeaders = Pick<HeadObjectCommandOutput, 'CacheControl' | 'ContentDisposition' | 'ContentEncoding' | 'ContentLanguage' | 'Expires'>;

type ObjectHead = Pick<HeadObjectCommandOutput, 'Metadata' | 'ContentType' | 'ContentLength' | 'LastModified' | 'ETag' | 'VersionId'> &
  ContentHeaders & { ContentRange?: string };

/** An object's content headers, for a copy with MetadataDirective REPLACE, which keeps only those it is sent. */
function contentHeaders({ CacheControl, ContentDisposition, ContentEncoding, ContentLanguage, Expires }: ContentHeaders): ContentHeaders {
  return { CacheControl, ContentDisposition, ContentEncoding, ContentLanguage, Expires };
}

function toBytes(body: Uint8Array | string): Buffer {
  return typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

function copySource(bucket: string, key: string, versionId?: string): string {
  const source = `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  return versionId === undefined ? source : `${source}?versionId=${encodeURIComponent(versionId)}`;
}

/** An object, or one S3 version or delete marker of it, as a listing shows it. */
interface S3Entry {
  Key: string;
  VersionId?: string;
  LastModified?: Date;
}

function hasKey<T extends { Key?: string }>(entry: T): entry is T & { Key: string } {
  return entry.Key !== undefined;
}

/** One version in S3's listing of a key: its id, and S3's time of it (ms). */
interface NativeVersion {
  id: string;
  modified: number;
}

/**
 * Where a native listing of versions goes on (its cursor): after version `last`, which S3 dated `modified`, at `next`,
 * the version that followed it. Both ids and the time, so the place is still found when one of them is deleted.
 */
interface NativePlace {
  last: string;
  modified: number;
  next: string;
}

function encodeNativePlace({ last, modified, next }: NativePlace): string {
  return JSON.stringify([last, modified, next]);
}

function decodeNativePlace(position: string): NativePlace {
  try {
    const [last, modified, next] = JSON.parse(position) as unknown[];
    if (typeof last === 'string' && typeof modified === 'number' && typeof next === 'string') return { last, modified, next };
  } catch {
    // refused below, like any cursor that is not a native listing's (one issued in explicit mode)
  }
  throw new InvalidArgumentError('cursor is not one this store issued for a natively versioned bucket');
}

/** The first `count` items of `items`, which is read no further. */
async function take<T>(items: AsyncIterable<T>, count: number): Promise<T[]> {
  const taken: T[] = [];
  for await (const item of items) {
    taken.push(item);
    if (taken.length >= count) break;
  }
  return taken;
}

/** A look for an earlier attempt that got an answer other than "try again" (405 from a server without versioning). */
class Untold {
  constructor(readonly error: unknown) {}
}

function nativeVersionId(id: string | undefined): string | undefined {
  return id === undefined || id === 'null' ? undefined : id;
}

/** Hashes of foreign objects kept in memory (a key, an ETag and a hash: ~200 bytes each). */
const MAX_FOREIGN_HASHES = 10_000;

/** 403s that refuse a question for good: no right to ask it. */
const REFUSALS = new Set(['AccessDenied', 'Forbidden', 'AllAccessDisabled']);
/** S3 answers that it does not know the keys signing the request. */
const WRONG_KEYS = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch']);

/** The S3 error code behind a mapped error (`AccessDenied`...). */
function sdkCode(error: StorageError): string | undefined {
  const cause = error.cause as { Code?: string; code?: string; name?: string } | undefined;
  return cause?.Code ?? cause?.code ?? cause?.name;
}

/** `S3_PREFIX` as the provider uses it: no leading slash, and a trailing one unless empty (`data` is `data/`). */
export function normalizeS3Prefix(prefix: string | undefined): string {
  const trimmed = (prefix ?? '').replace(/^\/+/, '');
  return trimmed === '' || trimmed.endsWith('/') ? trimmed : `${trimmed}/`;
}

/** Carries the caller's body error through the policy, which passes on what it cannot classify as it is. */
class BodyFailure extends Error {
  constructor(cause: unknown) {
    super('the body stream failed', { cause });
  }
}

interface Stored {
  size: number;
  etag: string;
  s3VersionId?: string;
}

export class S3Provider implements StorageProvider {
  readonly kind = 's3' as const;
  readonly client: S3Client;
  readonly policy: ResiliencePolicy;
  readonly bucket: string;
  readonly prefix: string;
  private readonly presignClient: S3Client;
  /** Sends the GetObjects whose body is handed to the caller: no socket timer, `s3-body.ts` limits the waits. */
  private readonly readClient: S3Client;
  private readonly socketTimeoutMs: number;
  private readonly threshold: number;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly listConcurrency: number;
  private readonly statsScanLimit: number;
  private readonly healthTimeoutMs: number;
  private readonly log?: Logger;
  /** Undefined until the bucket answered (`auto`): every call that needs it goes through `knownMode()` first. */
  private mode?: S3VersioningMode;
  private modeReason = 'not detected yet';
  /** The GetBucketVersioning under way, shared by the calls waiting for the mode. */
  private detecting?: Promise<S3VersioningMode>;
  /** When HeadBucket last found the bucket (ms): a HEAD's 404 is an object's, not the bucket's, for a while. */
  private bucketSeenAt = Number.NEGATIVE_INFINITY;
  /** Explicit versions made at once of one key become current in id order (`versions-in-flight.ts`). */
  private readonly versionsInFlight = new VersionsInFlight();
  /** Hashes of objects written without ours that were not adopted (see `etagOf`), by key, S3 version and ETag. */
  private readonly foreignHashes = new Map<string, string>();
  private readonly stopWatchingCircuit: () => void;

  constructor(options: S3ProviderOptions) {
    this.bucket = options.bucket;
    this.prefix = normalizeS3Prefix(options.prefix);
    this.threshold = options.multipartThreshold ?? 16 * MIB;
    this.partSize = Math.max(5 * MIB, options.partSize ?? 8 * MIB);
    this.queueSize = Math.max(1, options.queueSize ?? 4);
    this.listConcurrency = Math.max(1, options.listConcurrency ?? 16);
    this.statsScanLimit = Math.max(1000, options.statsScanLimit ?? 100_000);
    this.healthTimeoutMs = options.healthTimeoutMs ?? 2_000;
    // Not `component`: the process's logger names its own (web, worker), and a line with the key twice loses one.
    this.log = options.log?.child({ provider: 's3', store: options.name, bucket: options.bucket });
    this.socketTimeoutMs = options.socketTimeoutMs ?? 30_000;
    const config: S3ClientConfig = {
      region: options.region ?? 'us-east-1',
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle ?? false,
      credentials: options.credentials,
      // The resilience policy owns retries: SDK retries inside it would multiply attempts and hide outages.
      maxAttempts: 1,
      requestChecksumCalculation: options.checksum,
      responseChecksumValidation: options.checksum,
      requestHandler: { connectionTimeout: 3_000, socketTimeout: this.socketTimeoutMs },
    };
    this.client = new S3Client(config);
    this.readClient = new S3Client({ ...config, requestHandler: { connectionTimeout: 3_000, socketTimeout: 0 } });
    // Presigned PUTs from a WHEN_SUPPORTED client carry the CRC32 of an empty body: any real upload would fail.
    this.presignClient = new S3Client({
      ...config,
      endpoint: options.publicEndpoint ?? options.endpoint,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    const name = `s3 bucket "${this.bucket}"`;
    this.policy =
      options.resilience && 'execute' in options.resilience
        ? options.resilience
        : createResiliencePolicy({
            ...options.resilience,
            name,
            classify: (error) => toStorageError(error, name),
            probe: (signal) => this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }),
          });
    this.stopWatchingCircuit = this.policy.onStateChange((state) => {
      if (state === 'open') this.log?.warn({ circuit: state }, 's3 circuit opened: failing fast until the endpoint answers again');
      else this.log?.info({ circuit: state }, `s3 circuit ${state}`);
    });
  }

  /** `unknown` while S3 has not answered the question yet (`auto` only). */
  get versioning(): S3VersioningMode | 'unknown' {
    return this.mode ?? 'unknown';
  }

  /** While the mode is unknown, `explicit`: the lesser promise (versions only from createVersion). */
  get capabilities(): Capabilities {
    return {
      versioning: this.mode === 'native' ? 'every-write' : 'explicit',
      presign: 'native',
      diff: false,
      branches: false,
      rangeReads: true,
    };
  }

  /** Called once by `createS3Provider`. An S3 that does not answer leaves the mode unknown, not guessed (file comment). */
  async detectVersioning(requested: 'auto' | S3VersioningMode): Promise<void> {
    if (requested !== 'auto') {
      this.mode = requested;
      this.modeReason = 'set by configuration (S3_VERSIONING)';
      this.log?.info({ versioning: this.mode, reason: this.modeReason }, 's3 versioning mode');
      return;
    }
    await this.knownMode().catch((error: unknown) => {
      // Keys S3 does not know fail every call with that permission error until they are mended; the store still opens.
      if (!(error instanceof ProviderUnavailableError || error instanceof PermissionDeniedError)) throw error;
      this.log?.warn(
        { err: error },
        'could not ask the bucket its versioning: mode unknown until it answers, calls fail meanwhile (S3_VERSIONING=native|explicit pins the mode)',
      );
    });
  }

  /** The versioning mode, asked of the bucket while it is not known yet; unavailable while S3 cannot answer. */
  private async knownMode(): Promise<S3VersioningMode> {
    if (this.mode !== undefined) return this.mode;
    this.detecting ??= this.askVersioning().finally(() => {
      this.detecting = undefined;
    });
    return this.detecting;
  }

  /** The mode, for code that runs after a `knownMode()`: unknown here is a missing await, not an outage. */
  private get settledMode(): S3VersioningMode {
    if (this.mode === undefined) throw new Error(`s3 bucket "${this.bucket}": versioning mode used before it was known (a call without knownMode())`);
    return this.mode;
  }

  private async askVersioning(): Promise<S3VersioningMode> {
    let mode: S3VersioningMode;
    try {
      const out = await this.call('read bucket versioning', (signal) =>
        this.client.send(new GetBucketVersioningCommand({ Bucket: this.bucket }), { abortSignal: signal }),
      );
      mode = out.Status === 'Enabled' ? 'native' : 'explicit';
      this.modeReason = `bucket versioning ${out.Status ?? 'never enabled'}`;
    } catch (error) {
      // Only S3 refusing the question decides the mode: an answer it will give again (not implemented, a bad request,
      // access denied). Keys it does not know stay the permission error they are (the mode unknown); anything else
      // (down, throttled, no credentials yet, another 403 — a clock skewed, a token expired, which the SDK mends)
      // leaves the mode unknown, to be asked again.
      const code = error instanceof StorageError ? sdkCode(error) : undefined;
      if (error instanceof PermissionDeniedError && code !== undefined && WRONG_KEYS.has(code)) throw error;
      const refused = error instanceof StorageError && !error.retryable && (!(error instanceof PermissionDeniedError) || REFUSALS.has(code ?? ''));
      if (!refused) {
        const reason = (error as Error).message;
        this.modeReason = reason;
        throw new ProviderUnavailableError(
          `s3 bucket "${this.bucket}": versioning mode not known yet (${reason}); S3_VERSIONING=native|explicit pins it`,
          { cause: error },
        );
      }
      // S3 answered but refused the question (AccessDenied, NotImplemented): it will answer the same next time.
      mode = 'explicit';
      this.modeReason = `bucket versioning unreadable (${(error as Error).message})`;
      this.log?.warn({ err: error }, 'could not read bucket versioning: using explicit version objects (S3_VERSIONING=native|explicit sets the mode)');
    }
    this.mode ??= mode;
    this.log?.info({ versioning: this.mode, reason: this.modeReason }, 's3 versioning mode');
    return this.mode;
  }

  // ---- the contract ----

  async write(key: string, body: Body, opts?: WriteOptions): Promise<ObjectInfo> {
    const fullKey = this.objectKey(key);
    const { contentType, metadata, encoded } = describeS3Write(opts);
    let updatedAt = '';
    const describe = (etag: string) => {
      updatedAt = nowIso();
      return { ...encoded, [META.sha256]: etag, [META.updated]: updatedAt };
    };
    requireMetadataFits(describe(SHA256_SHAPE));
    await this.knownMode();
    const stored = await this.put(`write "${key}"`, fullKey, body, contentType, () => this.precondition(key, opts), describe, opts);
    const info: ObjectInfo = { key, size: stored.size, etag: stored.etag, contentType, metadata, updatedAt };
    const versionId = this.settledMode === 'native' ? nativeVersionId(stored.s3VersionId) : undefined;
    return versionId === undefined ? info : { ...info, versionId };
  }

  async read(key: string, opts?: ReadOptions): Promise<{ info: ObjectInfo; body: Readable }> {
    const fullKey = this.objectKey(key);
    // Shape only (negative, reversed): S3 itself clamps the end and refuses a start past the object (416).
    if (opts?.range) resolveRange(opts.range, Number.MAX_SAFE_INTEGER);
    await this.knownMode();
    const target = this.target(key, fullKey, opts?.versionId);
    const what = `read "${key}"`;
    const get = () =>
      this.call(what, (signal) =>
        this.readClient.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            ...target,
            Range: opts?.range ? `bytes=${opts.range[0]}-${opts.range[1]}` : undefined,
          }),
          { abortSignal: signal },
        ),
      ).catch((error: unknown) => this.versionLookupError(error, key, opts?.versionId));
    let out = await get();
    if (out.Metadata?.[META.sha256] === undefined) {
      // Not written by us: hash (and adopt) it first, then serve it.
      (out.Body as Readable | undefined)?.destroy();
      await this.stat(key, { versionId: opts?.versionId });
      out = await get();
    }
    const body = out.Body as Readable;
    const info = await this.describeObject(key, fullKey, out, opts?.versionId).catch((error: unknown) => {
      body.destroy(); // nothing else would: its request has no socket timer
      throw error;
    });
    if (opts?.range && opts.range[0] >= info.size) {
      // A server that served what S3 refuses (s3rver: 206 `bytes 0-0/0` for an empty object, then no byte): 416.
      body.destroy();
      resolveRange(opts.range, info.size);
    }
    const limited = limitIdleWaits(body, this.socketTimeoutMs, PAUSED_READ_FACTOR * this.socketTimeoutMs, what);
    return { info, body: opts?.range ? cutToRange(limited, out.ContentRange, info.size, opts.range, what) : limited };
  }

  async stat(key: string, opts?: { versionId?: string }): Promise<ObjectInfo> {
    const fullKey = this.objectKey(key);
    await this.knownMode();
    const out = await this.head(key, this.target(key, fullKey, opts?.versionId), opts?.versionId);
    return this.describeObject(key, fullKey, out, opts?.versionId);
  }

  async delete(key: string, opts?: DeleteOptions): Promise<void> {
    const fullKey = this.objectKey(key);
    const mode = await this.knownMode();
    await this.committed(fullKey, undefined, opts, async () => {
      if (opts?.allVersions) return this.deleteWithVersions(key, fullKey, mode);
      if (mode !== 'native') return this.deleteKey(`delete "${key}"`, fullKey);
      // A DeleteObject on a missing key would still add a delete marker: keep repeated deletes free of them.
      const current = await this.head(key, { Key: fullKey }).catch((error: unknown) =>
        error instanceof NotFoundError ? undefined : Promise.reject(error),
      );
      if (current === undefined) return;
      await this.addVersion(
        `delete "${key}"`,
        (signal) => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: fullKey }), { abortSignal: signal }),
        async (signal) => ((await deleteLanded(this.client, this.bucket, fullKey, current.VersionId, signal)) ? {} : undefined),
      );
    });
  }

  /**
   * Every S3 entry of the key, and in explicit mode of its version objects, deleted by VersionId: a bucket in explicit
   * mode may keep S3 versions all the same (versioning suspended, or its status not readable), where a delete by key
   * only adds a marker and every byte stays readable by version id.
   */
  private async deleteWithVersions(key: string, fullKey: string, mode: S3VersioningMode): Promise<void> {
    const what = `delete versions of "${key}"`;
    const doomed: ObjectIdentifier[] = [];
    for await (const entry of this.entriesUnder(what, fullKey)) {
      // Longer keys sharing the prefix (`a/b` for `a`) sort after every entry of the key itself.
      if (entry.Key !== fullKey) break;
      doomed.push({ Key: entry.Key, VersionId: entry.VersionId });
    }
    if (mode === 'explicit') {
      for await (const entry of this.entriesUnder(what, this.versionDir(key))) doomed.push({ Key: entry.Key, VersionId: entry.VersionId });
    }
    await this.deleteMany(what, doomed);
  }

  async list(opts?: { prefix?: string; cursor?: string; limit?: number }): Promise<Page<ObjectInfo>> {
    const { items: keys, cursor } = await this.listKeys(opts);
    const infos = await mapLimit(keys, this.listConcurrency, (key) =>
      this.head(key, { Key: this.prefix + key }).then(
        (out) => this.describeObject(key, this.prefix + key, out),
        (error: unknown) => (error instanceof NotFoundError ? undefined : Promise.reject(error)), // deleted meanwhile
      ),
    );
    const items = infos.filter((info): info is ObjectInfo => info !== undefined);
    return cursor === undefined ? { items } : { items, cursor };
  }

  async listKeys(opts?: { prefix?: string; cursor?: string; limit?: number }): Promise<Page<string>> {
    const prefix = validatePrefix(opts?.prefix);
    const limit = pageLimit(opts?.limit);
    const after = decodeCursor(opts?.cursor);
    if (prefix.startsWith(RESERVED)) return { items: [] };
    await this.knownMode();
    const reserved = this.prefix + RESERVED;
    const reservedEnd = this.prefix + RESERVED_END;
    const found: string[] = [];
    let startAfter = after === undefined ? undefined : this.prefix + after;
    let token: string | undefined;
    // One key past the page tells whether another page exists, so the last page never carries a cursor.
    while (found.length <= limit) {
      const out = await this.call('list', (signal) =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix + prefix,
            ContinuationToken: token,
            StartAfter: token === undefined ? startAfter : undefined,
            MaxKeys: Math.min(1000, limit + 1 - found.length),
          }),
          { abortSignal: signal },
        ),
      );
      const contents = out.Contents ?? [];
      for (const object of contents) {
        const key = this.userKeyOf(object.Key ?? '');
        if (key === undefined) continue;
        found.push(key);
        if (found.length > limit) break;
      }
      if (!out.IsTruncated || found.length > limit) break;
      const last = contents.at(-1)?.Key;
      if (last !== undefined && last.startsWith(reserved) && compareKeys(last, reservedEnd) < 0) {
        token = undefined; // jump over the versions and staged uploads in one request
        startAfter = reservedEnd;
      } else if (out.NextContinuationToken !== undefined) {
        token = out.NextContinuationToken;
      } else {
        token = undefined;
        startAfter = last;
      }
    }
    const items = found.slice(0, limit);
    return found.length > limit ? { items, cursor: encodeCursor(items.at(-1)!) } : { items };
  }

  async createVersion(key: string, body: Body, opts: VersionOptions): Promise<VersionInfo> {
    const fullKey = this.objectKey(key);
    if (typeof opts?.message !== 'string') throw new InvalidArgumentError('a version needs a message');
    // A native version's id is S3's, and S3 orders them as they land; explicit mode mints its own.
    if ((await this.knownMode()) === 'native') return this.newVersion(key, fullKey, body, opts);
    return this.versionsInFlight.track(key, (versionId, makeCurrent) => this.newVersion(key, fullKey, body, opts, { versionId, makeCurrent }));
  }

  /** The work of `createVersion`; `explicit` in explicit mode: the id minted for the version and its way to become current. */
  private async newVersion(
    key: string,
    fullKey: string,
    body: Body,
    opts: VersionOptions,
    explicit?: { versionId: string; makeCurrent: MakeCurrent },
  ): Promise<VersionInfo> {
    const { contentType, encoded } = describeS3Write(opts);
    const described = versionMetadata(opts.message, opts.author);
    const own = explicit === undefined ? described : { ...described, [META.version]: explicit.versionId };
    const what = `create a version of "${key}"`;
    let createdAt = '';
    const stamp = (etag: string) => {
      createdAt = nowIso();
      return { ...encoded, ...own, [META.sha256]: etag, [META.updated]: createdAt };
    };
    // The current object of an explicit version carries a subset of these.
    requireMetadataFits(stamp(SHA256_SHAPE));

    if (explicit === undefined) {
      const stored = await this.put(what, fullKey, body, contentType, () => this.precondition(key, opts), stamp, opts);
      const nativeId = nativeVersionId(stored.s3VersionId);
      if (nativeId === undefined) throw new NotSupportedError(`${what}: the bucket returned no version id (is versioning suspended?)`);
      return this.versionInfo(key, nativeId, stored.size, stored.etag, createdAt, opts.message, opts.author);
    }

    // Refused before the upload where it already fails; checked again, under the key's lock, before the copy.
    await this.precondition(key, opts);
    const { versionId, makeCurrent } = explicit;
    const versionKey = this.versionKey(key, versionId);
    // The version object is not current yet: its content is checked here, the fence before the copy that makes it so.
    const stored = await this.put(what, versionKey, body, contentType, undefined, stamp, { expectedEtag: opts.expectedEtag });
    const current = { ...encoded, [META.sha256]: stored.etag, [META.updated]: createdAt, [META.version]: versionId };
    await this.makeExplicitCurrent(key, versionId, makeCurrent, opts, (checked) => this.copy(what, versionKey, fullKey, contentType, current, checked, stored.size));
    return this.versionInfo(key, versionId, stored.size, stored.etag, createdAt, opts.message, opts.author);
  }

  /**
   * Makes an explicit version (its object already stored) current with `copy`: under the key's lock, its
   * preconditions checked again and the fence right before the copy. The check under the lock is what holds: the copy
   * is skipped when a version minted later already became current, and S3 checks only the copies it is sent (of
   * eight concurrent create-only versions, two succeeded). Refused, the version never became current and leaves no
   * trace; unavailable, it counts as made only when the current object names it (a copy that landed but answered late).
   */
  private async makeExplicitCurrent(
    key: string,
    versionId: string,
    makeCurrent: MakeCurrent,
    opts: (Fenced & Preconditions) | undefined,
    copy: (conditions: S3Conditions | undefined) => Promise<unknown>,
  ): Promise<void> {
    const fullKey = this.objectKey(key);
    try {
      await this.keyLocked(fullKey, async () => {
        const conditions = await this.precondition(key, opts);
        await passFence(opts);
        await makeCurrent(() => copy(conditions));
      });
    } catch (error) {
      if (!(error instanceof ProviderUnavailableError)) {
        await this.deleteKey(`forget refused version ${versionId} of "${key}"`, this.versionKey(key, versionId)).catch(() => undefined);
        throw error;
      }
      // The version object stays unless the current object names it (the copy may still land): at worst a version
      // that was never current.
      if (!(await this.isCurrentVersion(key, fullKey, versionId))) throw error;
    }
  }

  async listVersions(key: string, opts?: { cursor?: string; limit?: number }): Promise<Page<VersionInfo>> {
    const fullKey = this.objectKey(key);
    const limit = pageLimit(opts?.limit);
    const after = decodeVersionsCursor(key, opts?.cursor);
    if ((await this.knownMode()) === 'explicit') return this.listExplicitVersions(key, limit, after);
    return this.listNativeVersions(key, fullKey, limit, after === undefined ? undefined : decodeNativePlace(after));
  }

  async restoreVersion(key: string, versionId: string, opts?: RestoreOptions): Promise<VersionInfo> {
    const fullKey = this.objectKey(key);
    const what = `restore "${key}" to ${versionId}`;
    await this.knownMode();
    const source = await this.head(key, this.target(key, fullKey, versionId), versionId);
    const etag = await this.etagOf(key, fullKey, source, versionId);
    const contentType = source.ContentType ?? DEFAULT_CONTENT_TYPE;
    const size = source.ContentLength ?? 0;
    const kept = storedUserMetadata(source.Metadata);
    const createdAt = nowIso();
    const base = { ...kept, [META.sha256]: etag, [META.updated]: createdAt };

    if (this.settledMode === 'native') {
      const { metadata, message } = restoreMetadata(base, versionId, opts);
      const out = await this.committed(fullKey, undefined, opts, () =>
        this.addVersion(
          what,
          (signal) =>
            this.client.send(
              new CopyObjectCommand({
                Bucket: this.bucket,
                Key: fullKey,
                CopySource: copySource(this.bucket, fullKey, versionId),
                MetadataDirective: 'REPLACE',
                ContentType: contentType,
                ...contentHeaders(source),
                Metadata: metadata,
              }),
              { abortSignal: signal },
            ),
          (signal) => findStampedVersion(this.client, this.bucket, fullKey, stampOf(metadata), size, signal),
        ),
      );
      const newId = nativeVersionId(out.VersionId);
      if (newId === undefined) throw new NotSupportedError(`${what}: the bucket returned no version id (is versioning suspended?)`);
      return this.versionInfo(key, newId, size, etag, createdAt, message, opts?.author);
    }

    return this.versionsInFlight.track(key, async (newId, makeCurrent) => {
      const newKey = this.versionKey(key, newId);
      const { metadata: described, message } = restoreMetadata({ ...base, [META.version]: newId }, versionId, opts);
      await this.copy(what, this.versionKey(key, versionId), newKey, contentType, described, undefined, size);
      const current = { ...base, [META.version]: newId };
      await this.makeExplicitCurrent(key, newId, makeCurrent, opts, () => this.copy(what, newKey, fullKey, contentType, current, undefined, size));
      return this.versionInfo(key, newId, size, etag, createdAt, message, opts?.author);
    });
  }

  async deleteVersion(key: string, versionId: string): Promise<void> {
    const fullKey = this.objectKey(key);
    const what = `delete version ${versionId} of "${key}"`;
    if ((await this.knownMode()) === 'explicit') {
      if (isVersionId(versionId)) await this.deleteKey(what, this.versionKey(key, versionId));
      return;
    }
    if (versionId === '') return;
    await this.deleteKey(what, fullKey, versionId).catch((error: unknown) => {
      // A malformed or unknown id names no version: nothing to delete.
      if (error instanceof StorageError && ['NOT_FOUND', 'INVALID_ARGUMENT', 'NOT_SUPPORTED'].includes(error.code)) return;
      throw error;
    });
  }

  async presign(key: string, opts: { method: 'GET' | 'PUT'; expiresIn: number }): Promise<string> {
    const fullKey = this.objectKey(key);
    const { method, expiresIn } = opts;
    if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > MAX_PRESIGN_SECONDS) {
      throw new InvalidArgumentError(`expiresIn must be a whole number of seconds from 1 to ${MAX_PRESIGN_SECONDS}`);
    }
    const command =
      method === 'GET'
        ? new GetObjectCommand({ Bucket: this.bucket, Key: fullKey })
        : method === 'PUT'
          ? new PutObjectCommand({ Bucket: this.bucket, Key: fullKey })
          : undefined;
    if (command === undefined) throw new InvalidArgumentError(`cannot presign ${String(method)}: only GET and PUT`);
    try {
      return await getSignedUrl(this.presignClient, command, { expiresIn });
    } catch (error) {
      // Signing is local but needs credentials: a chain that cannot load them is unavailable, as for every other call.
      throw toStorageError(error, `presign ${method} "${key}"`);
    }
  }

  async stats(): Promise<ProviderStats> {
    const mode = await this.knownMode();
    const versionsPrefix = this.prefix + VERSIONS;
    let objects = 0;
    let bytes = 0;
    let versions = 0;
    let scanned = 0;
    let truncated = false;
    for await (const page of this.objectPages('stats', this.prefix)) {
      if (scanned >= this.statsScanLimit) {
        truncated = true;
        break;
      }
      for (const object of page) {
        scanned++;
        const key = object.Key ?? '';
        if (key.startsWith(versionsPrefix)) versions++;
        else if (this.userKeyOf(key) !== undefined) {
          objects++;
          bytes += object.Size ?? 0;
        }
      }
    }

    if (mode === 'native') {
      versions = 0;
      let seen = 0;
      for await (const page of this.versionPages('stats', this.prefix)) {
        if (seen >= this.statsScanLimit) {
          truncated = true;
          break;
        }
        for (const version of page.Versions ?? []) {
          seen++;
          if (this.userKeyOf(version.Key ?? '') !== undefined) versions++;
        }
      }
    }

    return {
      kind: 's3',
      objects,
      bytes,
      versions,
      detail: {
        bucket: this.bucket,
        prefix: this.prefix,
        versioning: mode,
        versioningReason: this.modeReason,
        circuit: this.policy.state,
        resilience: this.policy.counters,
        // Counts come from a listing of at most `scanLimit` keys: on a larger store they are lower bounds.
        scanLimit: this.statsScanLimit,
        truncated,
      },
    };
  }

  async health(): Promise<HealthReport> {
    const started = performance.now();
    const versioning = () => `versioning ${this.versioning} (${this.modeReason})`;
    try {
      await this.call('health check', (signal) => this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }), {
        retry: false,
        timeoutMs: this.healthTimeoutMs,
      });
      // The bucket answers: settle a mode still unknown now, not at the next request (a failure is in the detail).
      await this.knownMode().catch(() => undefined);
      return {
        status: this.mode === undefined ? 'degraded' : 'ok',
        detail: `bucket "${this.bucket}" answers; ${versioning()}; circuit ${this.policy.state}`,
        latencyMs: performance.now() - started,
      };
    } catch (error) {
      const reason = error instanceof NotFoundError ? `bucket "${this.bucket}" does not exist` : (error as Error).message;
      return { status: 'down', detail: `${reason}; ${versioning()}; circuit ${this.policy.state}`, latencyMs: performance.now() - started };
    }
  }

  async close(): Promise<void> {
    this.stopWatchingCircuit();
    this.client.destroy();
    this.readClient.destroy();
    this.presignClient.destroy();
  }

  // ---- keys ----

  private objectKey(key: string): string {
    validateKey(key);
    if (key.startsWith(RESERVED)) throw new InvalidKeyError(`keys under "${RESERVED}" are reserved by s3 stores for versions and staged uploads`);
    return this.prefix + key;
  }

  /**
   * The store key an S3 key under the store's prefix stands for: undefined under `.kyozo/` and where another tool
   * put an object under a name no store key can take (`a//b`, `tab\tname`, a console's `folder/` marker), which
   * `list` never shows and `stats` does not count.
   */
  private userKeyOf(fullKey: string): string | undefined {
    const key = fullKey.slice(this.prefix.length);
    if (key.startsWith(RESERVED)) return undefined;
    try {
      return validateKey(key);
    } catch {
      return undefined;
    }
  }

  private versionDir(key: string): string {
    return `${this.prefix}${VERSIONS}${sha256Hex(key)}/`;
  }

  private versionKey(key: string, versionId: string): string {
    return this.versionDir(key) + mirrorId(versionId);
  }

  /** Where a read of (key, versionId) goes. An id this store cannot have issued is simply not found. */
  private target(key: string, fullKey: string, versionId: string | undefined): { Key: string; VersionId?: string } {
    if (versionId === undefined) return { Key: fullKey };
    if (this.settledMode === 'native') {
      // 'null' is S3's id of a version written before versioning was enabled (listed as such): a version like any other.
      if (versionId === '') throw new NotFoundError(`"${key}" has no version ${JSON.stringify(versionId)}`);
      return { Key: fullKey, VersionId: versionId };
    }
    if (!isVersionId(versionId)) throw new NotFoundError(`"${key}" has no version ${JSON.stringify(versionId)}`);
    return { Key: this.versionKey(key, versionId) };
  }

  // ---- requests ----

  private call<T>(what: string, fn: (signal: AbortSignal) => Promise<T>, opts?: CallOptions): Promise<T> {
    return this.policy.execute(async (signal) => {
      try {
        return await fn(signal);
      } catch (error) {
        throw toStorageError(error, what);
      }
    }, opts);
  }

  /**
   * `fn` under this process's lock of `fullKey`: a `makeCurrent` check and the copy after it act as one step, and
   * copies onto the key land one at a time. Like disk's key lock, it orders one process, not several sharing a bucket.
   */
  private keyLocked<T>(fullKey: string, fn: () => Promise<T>): Promise<T> {
    return withProcessMutex(`s3:${this.bucket}:${fullKey}`, fn);
  }

  /**
   * The step that makes a mutation of `fullKey` current — its preconditions checked (`check`), its fence passed, its
   * request sent — under the key's lock: in this process mutations then land in the order they passed their fences
   * (the order their events leave in, `providers/key-turns.ts`), and a conditional one cannot be overtaken between its
   * check and its write on servers that ignore S3's conditions (s3rver). An upload before it runs outside the lock.
   */
  private committed<T>(fullKey: string, check: PreconditionCheck | undefined, fenced: Fenced | undefined, send: (conditions: S3Conditions | undefined) => Promise<T>): Promise<T> {
    return this.keyLocked(fullKey, async () => {
      const conditions = await check?.();
      await passFence(fenced);
      return send(conditions);
    });
  }

  /**
   * A request that adds a version (or delete marker) in native mode: every attempt after the first asks whether an
   * earlier one landed (`landed`, see `s3-landed.ts`) and answers with it, and sends again only when none did. A look
   * that is answered with anything but "try again" leaves the outcome unknown: unavailable, and nothing is resent.
   * Explicit mode writes plain keys, where a resend only writes the same again: sent through the policy as it is.
   */
  private async addVersion<T extends { VersionId?: string }>(
    what: string,
    send: (signal: AbortSignal) => Promise<T>,
    landed: (signal: AbortSignal) => Promise<{ VersionId?: string } | undefined>,
    opts?: CallOptions,
  ): Promise<{ VersionId?: string }> {
    if (this.settledMode !== 'native') return this.call(what, send, opts);
    let sent = false;
    const out = await this.call<{ VersionId?: string } | Untold>(
      what,
      async (signal) => {
        if (sent) {
          const found = await landed(signal).catch((error: unknown) => {
            const failure = toStorageError(error, `${what}: look for an earlier attempt`);
            if (failure instanceof StorageError && failure.retryable) throw failure;
            return new Untold(failure);
          });
          if (found !== undefined) return found;
        }
        sent = true;
        return send(signal);
      },
      opts,
    );
    if (out instanceof Untold) {
      throw new ProviderUnavailableError(
        `${what}: an attempt failed without a clear answer and whether it landed cannot be told (${out.error instanceof Error ? out.error.message : String(out.error)}); not sent again`,
        { cause: out.error },
      );
    }
    return out;
  }

  private head(key: string, target: { Key: string; VersionId?: string }, versionId?: string): Promise<ObjectHead> {
    return this.call(`stat "${key}"`, (signal) =>
      this.client.send(new HeadObjectCommand({ Bucket: this.bucket, ...target }), { abortSignal: signal }),
    )
      .catch((error: unknown) => this.versionLookupError(error, key, versionId))
      .catch(async (error: unknown) => {
        if (error instanceof NotFoundError) await this.confirmBucket(error);
        throw error;
      });
  }

  /**
   * A HEAD answer has no body, so S3 cannot say `NoSuchBucket` there: a missing bucket (a typo in S3_BUCKET, a
   * deleted bucket) looks like a missing object. Asked of the bucket itself, at most every BUCKET_CHECK_MS while it
   * is found; a missing bucket makes the call unavailable, as every other call says, instead of "not found".
   */
  private async confirmBucket(notFound: NotFoundError): Promise<void> {
    if (performance.now() - this.bucketSeenAt < BUCKET_CHECK_MS) return;
    try {
      await this.call('check bucket', (signal) => this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }));
      this.bucketSeenAt = performance.now();
    } catch (error) {
      if (error instanceof NotFoundError) {
        throw new ProviderUnavailableError(`${notFound.message} (the store's bucket "${this.bucket}" does not exist)`, { cause: error });
      }
      // The bucket could not be asked: the object's answer stands.
    }
  }

  /** S3 answers a malformed version id with 400 and a delete marker's id with 405: to the contract, not found. */
  private versionLookupError(error: unknown, key: string, versionId: string | undefined): never {
    // A HEAD's 404 has no body to tell what is missing: asked for a version, it is that version (as on every store).
    if (versionId !== undefined && error instanceof StorageError && ['INVALID_ARGUMENT', 'NOT_SUPPORTED', 'NOT_FOUND'].includes(error.code)) {
      throw new NotFoundError(`"${key}" has no version ${JSON.stringify(versionId)}`, { cause: error });
    }
    throw error;
  }

  /** Whether the current object of `key` is the explicit version `versionId`; `false` when that cannot be told. */
  private async isCurrentVersion(key: string, fullKey: string, versionId: string): Promise<boolean> {
    const current = await this.head(key, { Key: fullKey }).catch(() => undefined);
    return current?.Metadata?.[META.version] === versionId;
  }

  /**
   * ifMatch (our etag of the current object must match) and ifNoneMatch (no current object), checked on a HEAD.
   * Returns the conditions for S3 to check again where the write lands: If-Match with S3's ETag of what we saw,
   * If-None-Match: *.
   */
  private async precondition(key: string, opts: Preconditions | undefined): Promise<S3Conditions | undefined> {
    if (!hasPreconditions(opts)) return undefined;
    const fullKey = this.prefix + key;
    const current = await this.head(key, { Key: fullKey }).catch((error: unknown) => {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    });
    // An object we did not write is hashed only for ifMatch: ifNoneMatch needs to know only that there is one.
    if (opts?.ifMatch !== undefined) requireIfMatch(key, opts.ifMatch, current && (await this.etagOf(key, fullKey, current, undefined, false)));
    requireIfNoneMatch(key, opts?.ifNoneMatch, current !== undefined);
    return {
      ...(opts?.ifMatch === undefined ? {} : { IfMatch: current!.ETag }),
      ...(opts?.ifNoneMatch === undefined ? {} : { IfNoneMatch: '*' }),
    };
  }

  /**
   * Stores `body` at `target` with the metadata `describe(sha256)` returns, as one PutObject when the body is at
   * most `threshold` bytes, else staged through a multipart upload and copied into place (see the file comment).
   */
  private async put(
    what: string,
    target: string,
    body: Body,
    contentType: string,
    check: PreconditionCheck | undefined,
    describe: (etag: string) => Record<string, string>,
    checks: CommitChecks | undefined,
  ): Promise<Stored> {
    let bytes: Buffer;
    if (isReadable(body)) {
      const { head, rest } = await readAhead(body, this.threshold);
      if (rest !== undefined) {
        try {
          return await this.putStaged(what, target, rest, contentType, check, describe, checks);
        } finally {
          body.destroy(); // read to its end on success; on failure nobody else will stop it
        }
      }
      bytes = head;
    } else {
      bytes = toBytes(body);
    }
    // Over one PutObject, a buffer is staged and copied into place too: a multipart upload straight to the target
    // would land whatever happened while its parts were sent, after the fence and the checks were passed.
    if (bytes.length > this.threshold) return this.putStaged(what, target, Readable.from([bytes]), contentType, check, describe, checks);
    const etag = sha256Hex(bytes);
    requireExpectedEtag(what, checks?.expectedEtag, etag);
    const metadata = describe(etag);
    const out = await this.committed(target, check, checks, (conditions) =>
      this.addVersion(
        what,
        (signal) =>
          this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: target,
              Body: bytes,
              ContentLength: bytes.length,
              ContentType: contentType,
              Metadata: metadata,
              ...conditions,
            }),
            { abortSignal: signal },
          ),
        (signal) => findStampedVersion(this.client, this.bucket, target, stampOf(metadata), bytes.length, signal),
        conditional(conditions),
      ).catch(refusedIfGone(what, conditions)),
    );
    return { size: bytes.length, etag, s3VersionId: out.VersionId };
  }

  private async putStaged(
    what: string,
    target: string,
    body: Readable,
    contentType: string,
    check: PreconditionCheck | undefined,
    describe: (etag: string) => Record<string, string>,
    checks: CommitChecks | undefined,
  ): Promise<Stored> {
    // Refused before the upload where it already fails (a create-only write of a key that exists need not send its
    // gigabytes first); checked again under the key's lock before the copy that makes it current.
    await check?.();
    const staged = `${this.prefix}${STAGING}${newVersionId()}`;
    const hashing = new HashingStream();
    // lib-storage takes a `size` property for the body's total length: HashingStream's running count is not that.
    const content = new PassThrough();
    const hashed = pipeline(body, hashing, content).catch(() => undefined); // the upload sees the same failure
    let stagedVersion: string | undefined;
    try {
      const uploaded = await this.upload(what, staged, content, contentType);
      await hashed;
      stagedVersion = uploaded.VersionId;
      const etag = hashing.etag;
      requireExpectedEtag(what, checks?.expectedEtag, etag);
      const out = await this.committed(target, check, checks, (conditions) => this.copy(what, staged, target, contentType, describe(etag), conditions, hashing.size));
      return { size: hashing.size, etag, s3VersionId: out.VersionId };
    } finally {
      body.destroy();
      // In a versioned bucket only deleting the staged version itself removes it (else: a delete marker).
      await this.call(`${what}: remove staged upload`, (signal) =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: staged, VersionId: nativeVersionId(stagedVersion) }), {
          abortSignal: signal,
        }),
      ).catch((error: unknown) => this.log?.warn({ err: error, staged }, 'could not remove a staged upload; the cleanup job will (removeLeftovers)'));
    }
  }

  /** A multipart upload of a stream to a staging key (`putStaged` copies it into place). */
  private async upload(what: string, target: string, body: Readable, contentType: string): Promise<{ VersionId?: string }> {
    // A one-shot stream cannot be sent twice, and its duration grows with its size: breaker only.
    return this.call(
      what,
      async (signal) => {
        const upload = new Upload({
          client: this.client,
          params: { Bucket: this.bucket, Key: target, Body: body, ContentType: contentType },
          partSize: this.partSize,
          queueSize: this.queueSize,
        });
        const abort = () => void upload.abort();
        signal.addEventListener('abort', abort, { once: true });
        try {
          return await upload.done();
        } catch (error) {
          // The caller's stream failed, not the endpoint (the upload may report its own abort instead).
          throw body.errored ? new BodyFailure(body.errored) : error;
        } finally {
          signal.removeEventListener('abort', abort);
        }
      },
      { retry: false, timeoutMs: false },
    ).catch((error: unknown) => {
      throw error instanceof BodyFailure ? error.cause : error;
    });
  }

  private copy(
    what: string,
    from: string,
    to: string,
    contentType: string,
    metadata: Record<string, string>,
    conditions?: S3Conditions,
    size = 0,
  ): Promise<{ VersionId?: string }> {
    // A server-side copy takes time in proportion to the object: large ones get no per-attempt timeout.
    const opts: CallOptions = { ...conditional(conditions), ...(size > this.threshold ? { timeoutMs: false } : {}) };
    return this.addVersion(
      what,
      (signal) =>
        this.client.send(
          new CopyObjectCommand({
            Bucket: this.bucket,
            Key: to,
            CopySource: copySource(this.bucket, from),
            MetadataDirective: 'REPLACE',
            ContentType: contentType,
            Metadata: metadata,
            ...conditions,
          }),
          { abortSignal: signal },
        ),
      (signal) => findStampedVersion(this.client, this.bucket, to, stampOf(metadata), size, signal),
      opts,
    ).catch(refusedIfGone(what, conditions, () => this.stillNamed(to, conditions?.IfMatch)));
  }

  /** Whether the object at `fullKey` still has S3's ETag `etag` (a missing one has none). */
  private async stillNamed(fullKey: string, etag: string | undefined): Promise<boolean> {
    const out = await this.call(`head "${fullKey}"`, (signal) => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: fullKey }), { abortSignal: signal })).catch(
      (error: unknown) => (error instanceof NotFoundError ? undefined : Promise.reject(error)),
    );
    return out !== undefined && out.ETag === etag;
  }

  /**
   * Staged uploads a killed process or an outage left under `.kyozo/tmp/` and started more than `olderThanMs` ago:
   * multipart uploads never completed (aborted: S3 keeps, and bills, their parts until then) and staged objects never
   * removed after their copy into place (every version of them, in a versioned bucket). The cleanup job calls it.
   */
  async removeLeftovers(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    const prefix = `${this.prefix}${STAGING}`;
    const what = 'remove staged leftovers';
    const aborted = await this.abortStaleUploads(what, prefix, cutoff).catch((error: unknown) => {
      // A server without the listing (s3rver) or keys without the right to it: the staged objects still go.
      if (!(error instanceof NotSupportedError || error instanceof PermissionDeniedError)) throw error;
      this.log?.warn({ err: error }, 'incomplete multipart uploads not looked for: the key cannot list them here');
      return 0;
    });
    const stale: ObjectIdentifier[] = [];
    for await (const entry of this.entriesUnder(what, prefix)) {
      if ((entry.LastModified?.getTime() ?? cutoff) < cutoff) stale.push({ Key: entry.Key, VersionId: entry.VersionId });
    }
    await this.deleteMany(what, stale);
    return aborted + stale.length;
  }

  /**
   * Aborts the multipart uploads under `prefix` that nothing has added to since `cutoff`: begun before it, and no part
   * uploaded after it (a long upload still running is left alone).
   */
  private async abortStaleUploads(what: string, prefix: string, cutoff: number): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const out = await this.call(what, (signal) =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }), {
          abortSignal: signal,
        }),
      );
      for (const { Key, UploadId, Initiated } of out.Uploads ?? []) {
        if (Key === undefined || UploadId === undefined || (Initiated?.getTime() ?? cutoff) >= cutoff) continue;
        const parts = await this.call(what, (signal) => this.client.send(new ListPartsCommand({ Bucket: this.bucket, Key, UploadId }), { abortSignal: signal }));
        const lastPart = Math.max(0, ...(parts.Parts ?? []).map((part) => part.LastModified?.getTime() ?? 0));
        if (parts.IsTruncated || lastPart >= cutoff) continue;
        await this.call(what, (signal) => this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }), { abortSignal: signal }));
        aborted++;
      }
      [keyMarker, uploadIdMarker] = out.IsTruncated ? [out.NextKeyMarker, out.NextUploadIdMarker] : [undefined, undefined];
    } while (keyMarker !== undefined);
    return aborted;
  }

  private async deleteKey(what: string, fullKey: string, versionId?: string): Promise<void> {
    await this.call(what, (signal) =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: fullKey, VersionId: versionId }), { abortSignal: signal }),
    );
  }

  private async deleteMany(what: string, objects: ObjectIdentifier[]): Promise<void> {
    for (let start = 0; start < objects.length; start += 1000) {
      const batch = objects.slice(start, start + 1000);
      const out = await this.call(what, (signal) =>
        this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } }), { abortSignal: signal }),
      );
      const failed = out.Errors?.[0];
      if (failed) throw toStorageError({ Code: failed.Code, message: failed.Message }, `${what} (${failed.Key})`);
    }
  }

  /** Every page of objects under `prefix`, in S3 order (ListObjectsV2); a caller that has seen enough stops. */
  private async *objectPages(what: string, prefix: string): AsyncGenerator<NonNullable<ListObjectsV2CommandOutput['Contents']>> {
    let token: string | undefined;
    do {
      const out = await this.call(what, (signal) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal: signal }),
      );
      yield out.Contents ?? [];
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /**
   * Every S3 entry under `prefix`, in key order, as a delete must name it: each version and delete marker with its
   * VersionId, whatever the mode (a bucket in explicit mode may be versioned all the same), or each object where the
   * server keeps no versions (s3rver), or where keys in explicit mode may not list them (the mode is often chosen for
   * such keys: a bucket whose versioning they may not read). A caller that has seen enough stops.
   */
  private async *entriesUnder(what: string, prefix: string): AsyncGenerator<S3Entry> {
    try {
      for await (const page of this.versionPages(what, prefix)) {
        // Versions and delete markers come in two lists, each in key order.
        yield* [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].filter(hasKey).sort((a, b) => compareKeys(a.Key, b.Key));
      }
    } catch (error) {
      const refused = error instanceof PermissionDeniedError && this.mode === 'explicit';
      if (!(error instanceof NotSupportedError || refused)) throw error;
      if (refused) this.log?.warn({ err: error, prefix }, 'S3 versions not listed (the key may not): objects deleted by key, any S3 versions of them stay');
      for await (const page of this.objectPages(what, prefix)) {
        yield* page.filter(hasKey);
      }
    }
  }

  /**
   * Every page of versions and delete markers under `prefix` (ListObjectVersions), after version `after` if given, of
   * at most `pageSize` entries; a caller that has seen enough stops.
   */
  private async *versionPages(
    what: string,
    prefix: string,
    after?: { key: string; versionId: string },
    pageSize = 1000,
  ): AsyncGenerator<ListObjectVersionsCommandOutput> {
    let keyMarker = after?.key;
    let versionIdMarker = after?.versionId;
    do {
      const out = await this.call(what, (signal) =>
        this.client.send(
          new ListObjectVersionsCommand({
            Bucket: this.bucket,
            Prefix: prefix,
            KeyMarker: keyMarker,
            VersionIdMarker: versionIdMarker,
            MaxKeys: Math.min(1000, pageSize),
          }),
          { abortSignal: signal },
        ),
      );
      yield out;
      [keyMarker, versionIdMarker] = out.IsTruncated ? [out.NextKeyMarker, out.NextVersionIdMarker] : [undefined, undefined];
    } while (keyMarker !== undefined);
  }

  /** Keys (with sizes) under `prefix` after `startAfter`, at most `max`, in S3 order. */
  private async listS3Keys(what: string, prefix: string, startAfter: string | undefined, max: number): Promise<{ key: string; size: number }[]> {
    const keys: { key: string; size: number }[] = [];
    let token: string | undefined;
    do {
      const out = await this.call(what, (signal) =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            StartAfter: token === undefined ? startAfter : undefined,
            ContinuationToken: token,
            MaxKeys: Math.min(1000, max - keys.length),
          }),
          { abortSignal: signal },
        ),
      );
      for (const object of out.Contents ?? []) if (object.Key !== undefined) keys.push({ key: object.Key, size: object.Size ?? 0 });
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token !== undefined && keys.length < max);
    return keys.slice(0, max);
  }

  // ---- describing objects and versions ----

  private async describeObject(key: string, fullKey: string, out: ObjectHead, versionId?: string): Promise<ObjectInfo> {
    const etag = await this.etagOf(key, fullKey, out, versionId);
    const metadata = out.Metadata ?? {};
    const total = /\/(\d+)$/.exec(out.ContentRange ?? '')?.[1];
    const info: ObjectInfo = {
      key,
      size: total !== undefined ? Number(total) : (out.ContentLength ?? 0),
      etag,
      contentType: out.ContentType ?? DEFAULT_CONTENT_TYPE,
      metadata: userMetadata(metadata),
      updatedAt: metadata[META.updated] ?? (out.LastModified ?? new Date(0)).toISOString(),
    };
    const id = this.settledMode === 'native' ? nativeVersionId(out.VersionId) : metadata[META.version];
    return id === undefined ? info : { ...info, versionId: id };
  }

  /**
   * Our etag of an object. One without it (a presigned PUT, another tool) is read once to hash it. In explicit mode
   * the current object is then copied onto itself with the hash, if it is still the one we read
   * (CopySourceIfMatch): adopted. Not in native mode, where the copy would be a version of its own, nor with `adopt`
   * false (a condition's check, whose `If-Match` names the S3 ETag seen, which a copy would change): the hash is
   * kept in memory instead, by the object's S3 ETag and version.
   */
  private async etagOf(key: string, fullKey: string, out: ObjectHead, versionId?: string, adopt = true): Promise<string> {
    const known = out.Metadata?.[META.sha256];
    if (known !== undefined) return known;
    const adopting = versionId === undefined && adopt && this.mode === 'explicit';
    const seen = `${fullKey}\n${out.VersionId ?? ''}\n${out.ETag ?? ''}`;
    const hashed = adopting || out.ETag === undefined ? undefined : this.foreignHashes.get(seen);
    if (hashed !== undefined) return hashed;
    const target = this.target(key, fullKey, versionId);
    const what = `hash "${key}"`;
    const got = await this.call(what, (signal) => this.client.send(new GetObjectCommand({ Bucket: this.bucket, ...target }), { abortSignal: signal }));
    const hashing = new HashingStream();
    try {
      await pipeline(got.Body as Readable, hashing, new Writable({ write: (_chunk, _encoding, done) => done() }));
    } catch (error) {
      throw toStorageError(error, what);
    }
    const etag = hashing.etag;
    if (!adopting) {
      // Kept only when what was read is what was described: the object may have changed between the two.
      if (out.ETag !== undefined && got.ETag === out.ETag) this.rememberForeignHash(seen, etag);
      return etag;
    }
    const metadata = { ...storedUserMetadata(out.Metadata), [META.sha256]: etag, [META.updated]: (out.LastModified ?? new Date()).toISOString() };
    await this.addVersion(
      `adopt "${key}"`,
      (signal) =>
        this.client.send(
          new CopyObjectCommand({
            Bucket: this.bucket,
            Key: fullKey,
            CopySource: copySource(this.bucket, fullKey),
            CopySourceIfMatch: got.ETag,
            MetadataDirective: 'REPLACE',
            ContentType: out.ContentType ?? DEFAULT_CONTENT_TYPE,
            // Of the object read (CopySourceIfMatch): a client given a presigned URL, or another tool, may have set them.
            ...contentHeaders(got),
            Metadata: metadata,
          }),
          { abortSignal: signal },
        ),
      (signal) => findStampedVersion(this.client, this.bucket, fullKey, stampOf(metadata), hashing.size, signal),
    ).then(
      () => this.log?.info({ key }, 'adopted an object written without a content hash'),
      (error: unknown) => this.log?.warn({ err: error, key }, 'could not record the content hash of an adopted object; it will be hashed again'),
    );
    return etag;
  }

  private rememberForeignHash(seen: string, etag: string): void {
    if (this.foreignHashes.size >= MAX_FOREIGN_HASHES) this.foreignHashes.delete(this.foreignHashes.keys().next().value!);
    this.foreignHashes.set(seen, etag);
  }

  private versionInfo(key: string, versionId: string, size: number, etag: string, createdAt: string, message?: string, author?: Author): VersionInfo {
    const info: VersionInfo = { versionId, key, size, etag, createdAt };
    if (message !== undefined) info.message = message;
    if (author !== undefined) info.author = author;
    return info;
  }

  private async describeVersion(key: string, fullKey: string, versionId: string, out: ObjectHead): Promise<VersionInfo> {
    const metadata = out.Metadata ?? {};
    const message = metadata[META.message];
    return this.versionInfo(
      key,
      versionId,
      out.ContentLength ?? 0,
      await this.etagOf(key, fullKey, out, versionId),
      metadata[META.updated] ?? (out.LastModified ?? new Date(0)).toISOString(),
      message === undefined ? undefined : decodeMetaValue(message),
      parseAuthor(metadata[META.author]),
    );
  }

  private async listExplicitVersions(key: string, limit: number, after: string | undefined): Promise<Page<VersionInfo>> {
    const dir = this.versionDir(key);
    if (after !== undefined && !isVersionId(after)) throw new InvalidArgumentError('cursor is not one this store issued');
    const keys = await this.listS3Keys(`list versions of "${key}"`, dir, after === undefined ? undefined : dir + mirrorId(after), limit + 1);
    const ids = keys.map((entry) => mirrorId(entry.key.slice(dir.length))).filter(isVersionId);
    const page = ids.slice(0, limit);
    const fullKey = this.prefix + key;
    const infos = await mapLimit(page, this.listConcurrency, (id) =>
      this.head(key, { Key: this.versionKey(key, id) }).then(
        (out) => this.describeVersion(key, fullKey, id, out),
        (error: unknown) => (error instanceof NotFoundError ? undefined : Promise.reject(error)), // removed meanwhile
      ),
    );
    const items = infos.filter((info): info is VersionInfo => info !== undefined);
    return ids.length > limit ? { items, cursor: encodeVersionsCursor(key, page.at(-1)!) } : { items };
  }

  /**
   * The key's versions (not delete markers), newest first, after version `after`, `pageSize` asked per request; a
   * caller that has seen enough stops.
   */
  private async *nativeVersions(key: string, fullKey: string, after: string | undefined, pageSize: number): AsyncGenerator<NativeVersion> {
    const start = after === undefined ? undefined : { key: fullKey, versionId: after };
    for await (const page of this.versionPages(`list versions of "${key}"`, fullKey, start, pageSize)) {
      for (const version of page.Versions ?? []) {
        // Versions of longer keys sharing the prefix (`a/b` for `a`) sort after every version of the key itself.
        if (version.Key !== fullKey) return;
        if (version.VersionId !== undefined) yield { id: version.VersionId, modified: version.LastModified?.getTime() ?? 0 };
      }
    }
  }

  /**
   * At most `max` of the key's versions after `place`, newest first. S3 goes on after the cursor's version while it
   * is there; once it was deleted (retention, deleteVersion) S3 cannot place it (moto lists nothing), so when the page
   * does not begin with the version that followed it, the key's versions are read from the newest up to the place:
   * after the cursor's version, else at the one that followed it, else at the first that S3 dates before it (the
   * others of its second count as seen: listings give whole seconds).
   */
  private async nativeVersionsAfter(key: string, fullKey: string, place: NativePlace | undefined, max: number): Promise<NativeVersion[]> {
    const listed = await take(this.nativeVersions(key, fullKey, place?.last, max), max);
    if (place === undefined || listed[0]?.id === place.next) return listed;
    const found: NativeVersion[] = [];
    let placed = false;
    for await (const version of this.nativeVersions(key, fullKey, undefined, 1000)) {
      if (!placed) {
        placed = version.id === place.last || version.id === place.next || version.modified < place.modified;
        if (!placed || version.id === place.last) continue;
      }
      found.push(version);
      if (found.length >= max) break;
    }
    return found;
  }

  private async listNativeVersions(key: string, fullKey: string, limit: number, place: NativePlace | undefined): Promise<Page<VersionInfo>> {
    const listed = await this.nativeVersionsAfter(key, fullKey, place, limit + 1);
    const page = listed.slice(0, limit);
    const infos = await mapLimit(page, this.listConcurrency, ({ id }) =>
      this.head(key, { Key: fullKey, VersionId: id }, id).then(
        (out) => this.describeVersion(key, fullKey, id, out),
        (error: unknown) => (error instanceof NotFoundError ? undefined : Promise.reject(error)),
      ),
    );
    const items = infos.filter((info): info is VersionInfo => info !== undefined);
    if (listed.length <= limit) return { items };
    const last = page.at(-1)!;
    return { items, cursor: encodeVersionsCursor(key, encodeNativePlace({ last: last.id, modified: last.modified, next: listed[limit]!.id })) };
  }
}
