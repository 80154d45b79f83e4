/**
 * Every setting, read from the environment and validated with zod (DESIGN §11). A bad value is a
 * `ConfigError` whose message is one line naming the variable; entry points print it and exit 1.
 *
 * Store settings can be overridden per store with the store's name in upper case as a prefix:
 * `DOCS_GIT_REPO_PATH` beats `GIT_REPO_PATH` for the store `docs` (see `storeConfig`).
 */
import { constants as bufferConstants } from 'node:buffer';
import path from 'node:path';
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { checkIdentityPart, validateBranchName } from './providers/git-layout.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const PROVIDER_KINDS = ['disk', 'ram', 'git', 's3', 'hybrid'] as const;
export type StoreKind = (typeof PROVIDER_KINDS)[number];

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
/** Inline bodies are held in the web process's memory and in Redis job data (DESIGN §6): a few MiB at most. */
const MAX_STAGING_INLINE = 16 * MIB;
const DEFAULT_STAGING_INLINE = 256 * KIB;

/** Finished jobs kept, per queue: the newest `*Count`, none older than `*AgeSeconds` (`*_JOBS_KEEP_*`). */
export interface JobRetention {
  /** Completed jobs: the idempotency window, and what `GET /v1/jobs/:id` and `?wait=true` can still find. */
  completedAgeSeconds: number;
  completedCount: number;
  failedAgeSeconds: number;
  failedCount: number;
}

export const DEFAULT_JOB_RETENTION: JobRetention = {
  completedAgeSeconds: 24 * 3600,
  completedCount: 10_000,
  failedAgeSeconds: 7 * 24 * 3600,
  failedCount: 50_000,
};
/**
 * A body up to S3_MULTIPART_THRESHOLD is read into one Buffer and sent as one PutObject: S3 takes at most 5 GiB in
 * one PutObject, and Node 20 holds at most 4 GiB in one Buffer (`buffer.constants.MAX_LENGTH`). The 5 MiB floor is
 * not S3's (the threshold is no part size; parts are 8 MiB): below it small writes would cost a multipart upload,
 * a copy and a delete instead of one request.
 */
const MAX_SINGLE_PUT = Math.min(5 * GIB, bufferConstants.MAX_LENGTH);

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'expected true or false' })
  .transform((value) => value === 'true' || value === '1' || value === 'yes');
/** Redis Cluster's rule: the text between the first `{` and the first `}` after it, when not empty, is hashed alone. */
function hasHashTag(prefix: string): boolean {
  const open = prefix.indexOf('{');
  const close = open < 0 ? -1 : prefix.indexOf('}', open + 1);
  return close > open + 1;
}

/** Digits only: `Number(" ")` is 0, which would make `PORT=" "` a random port. */
const int = (min = 0, max = Number.MAX_SAFE_INTEGER, tooBig?: string) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, 'expected a whole number')
    .transform(Number)
    .pipe(z.number().min(min).max(max, tooBig));
/** Node's timers take at most 2^31-1 ms (24.8 days) and fire after 1 ms for anything longer. */
const MAX_TIMER_MS = 2_147_483_647;
/** What the shutdown deadline adds to WORKER_SHUTDOWN_TIMEOUT_MS in `npm start`: DRAIN_MS + SHUTDOWN_GRACE_MS. */
const SHUTDOWN_DEADLINE_EXTRA_MS = 40_000;
/** A delay some timer waits for, within what it can take. */
const timerMs = (min: number, max = MAX_TIMER_MS) => int(min, max, `at most ${max} ms (about 24 days): a timer cannot wait longer`);
const list = z.string().transform((value) =>
  value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== ''),
);
/**
 * A URL ioredis can connect by: `localhost:6379` parses as a URL of the scheme "localhost:", and ioredis fails on
 * a port out of range with only "Invalid URL". A path is the database number.
 */
const redisUrl = z.string().refine((value) => {
  if (!/^rediss?:\/\/\S+$/.test(value) || !URL.canParse(value)) return false;
  const url = new URL(value);
  return url.hostname !== '' && url.port !== '0' && /^\/?\d*$/.test(url.pathname);
}, 'expected redis://host:port or rediss://host:port (a port from 1 to 65535; a database number after it, if any: redis://host:6379/0)');
/**
 * A name or path made of spaces only would bind to nothing, prefix keys with spaces, or make a directory named " ".
 * Spaces around one (`HOST="0.0.0.0 "`, from a .env file) are refused, not dropped: a data directory or queue prefix
 * that had them would silently become another one, its data and waiting jobs left behind.
 */
const nonBlank = z
  .string()
  .regex(/\S/, 'must not be blank')
  .refine((value) => value.trim() === value, 'must not start or end with spaces');
/** An endpoint the SDK can use: `minio:9000` parses as a URL of the scheme "minio:", which would fail only at the first request. */
const httpEndpoint = z
  .string()
  .refine((value) => URL.canParse(value) && /^https?:$/.test(new URL(value).protocol), 'expected http://host:port or https://host');
/**
 * API tokens: `.env.example`'s placeholder (`change-me-...`) copied as it is must not become a working credential,
 * and a short token is guessable. Entries are numbered, never shown: they are secrets.
 */
const MIN_TOKEN_LENGTH = 16;
const apiTokens = list.superRefine((tokens, ctx) => {
  tokens.forEach((token, index) => {
    const why = /change-me/i.test(token)
      ? 'is the placeholder from .env.example (contains "change-me"): set a long random token, e.g. from `openssl rand -hex 32`'
      : token.length < MIN_TOKEN_LENGTH
        ? `is shorter than ${MIN_TOKEN_LENGTH} characters`
        : // `Bearer <token>` ends at a space, and a header carries bytes: such a token could never be sent.
          !/^[\x21-\x7e]+$/.test(token)
          ? 'has a space or a character outside printable ASCII, which an Authorization: Bearer header cannot carry'
          : undefined;
    if (why !== undefined) ctx.addIssue({ code: 'custom', message: `entry ${index + 1} ${why}` });
  });
});
/** `host:port,...`; a port outside 1..65535 would fail only when ioredis first connects. */
const clusterNodes = list.transform((nodes, ctx) => {
  const parsed: { host: string; port: number }[] = [];
  for (const [index, node] of nodes.entries()) {
    // An IPv6 address in brackets (`[::1]:7000`): ioredis takes the address without them.
    const match = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(node) ?? /^([^[\]]+):(\d+)$/.exec(node);
    if (!match) {
      ctx.addIssue({ code: 'custom', message: `entry ${index + 1} "${node}" is not host:port` });
      return z.NEVER;
    }
    const port = Number(match[2]);
    if (port < 1 || port > 65535) {
      ctx.addIssue({ code: 'custom', message: `entry ${index + 1} "${node}" has port ${match[2]}: expected 1 to 65535` });
      return z.NEVER;
    }
    parsed.push({ host: match[1]!, port });
  }
  return parsed;
});
/**
 * Webhook receivers: http(s) URLs without credentials (fetch refuses a URL with `user:password@`, so every delivery
 * would fail, and the password would sit in each failure). A comma inside a URL must be sent as `%2C`. Two spellings
 * of one URL (`https://Host/x`, `https://host:443/x`, `https://host/x#a`: a fragment is never sent) are refused: each would get every event, as its own receiver
 * (a repeated entry, spelled the same, is one).
 */
const webhookUrls = list.superRefine((urls, ctx) => {
  const spellings = new Map<string, { entry: string; index: number }>();
  urls.forEach((entry, index) => {
    if (!URL.canParse(entry)) return;
    const url = new URL(entry);
    url.hash = ''; // never sent
    const href = url.href;
    const first = spellings.get(href);
    if (first === undefined) spellings.set(href, { entry, index });
    else if (first.entry !== entry) ctx.addIssue({ code: 'custom', message: `entries ${first.index + 1} and ${index + 1} are one URL spelled two ways: keep one` });
  });
  urls.forEach((entry, index) => {
    const url = URL.canParse(entry) ? new URL(entry) : undefined;
    const why =
      url === undefined
        ? 'is not a URL (a comma inside one must be written %2C)'
        : url.protocol !== 'http:' && url.protocol !== 'https:'
          ? `is ${url.protocol} (http: or https: only)`
          : url.username !== '' || url.password !== ''
            ? 'carries credentials (user:password@), which fetch refuses: put the secret in the path or sign with WEBHOOK_SECRET'
            : undefined;
    if (why !== undefined) ctx.addIssue({ code: 'custom', message: `entry ${index + 1} ${why}` });
  });
});
/**
 * Origins whose pages may call the API from a browser (`src/api/cors.ts`), as browsers send them in `Origin`:
 * scheme, host and port, nothing after. `*` is every origin. Spelled otherwise (`https://App.example.com:443/`), an
 * entry is kept as its origin; one with a path, query or credentials is refused: it could never match.
 */
const corsOrigins = list.transform((entries, ctx) =>
  entries.map((entry, index) => {
    if (entry === '*') return entry;
    const url = URL.canParse(entry) ? new URL(entry) : undefined;
    const why =
      url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')
        ? 'is not an http(s) origin such as https://app.example.com'
        : url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== ''
          ? `has more than an origin: a browser sends ${url.origin}`
          : url.hostname.includes('*')
            ? 'has a wildcard in its host, which no browser sends: list each origin, or * alone for every one'
            : undefined;
    if (why !== undefined) ctx.addIssue({ code: 'custom', message: `entry ${index + 1} ${why}` });
    return url?.origin ?? entry;
  }),
);
const kind = z.enum(PROVIDER_KINDS, { message: `expected one of ${PROVIDER_KINDS.join(', ')}` });
const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/**
 * A schedule as BullMQ reads it (cron-parser): five fields, six with seconds first, or an alias such as `@hourly`.
 * Checked here so that a typo stops every process at start with the variable's name, instead of stopping only the
 * worker with cron-parser's words, or (a field missing) running on another schedule than meant.
 */
const cron = z.string().superRefine((pattern, ctx) => {
  const fields = pattern.trim().split(/\s+/).length;
  let parsed: ReturnType<typeof CronExpressionParser.parse>;
  try {
    if (!pattern.trim().startsWith('@') && fields !== 5 && fields !== 6) throw new Error(`${fields} fields, expected 5 (or 6, seconds first)`);
    parsed = CronExpressionParser.parse(pattern);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `not a cron pattern: ${(error as Error).message}` });
    return;
  }
  try {
    parsed.next();
  } catch {
    // `0 0 31 2,4 *` parses, but BullMQ then registers nothing, silently.
    ctx.addIssue({ code: 'custom', message: 'never fires (no date matches it)' });
  }
});

/** The longest store name. */
export const MAX_STORE_NAME = 63;
const STORE_NAME = new RegExp(`^[a-z0-9][a-z0-9_-]{0,${MAX_STORE_NAME - 1}}$`);

const storesSetting = list.transform((entries, ctx) => {
  const stores: { name: string; kind: StoreKind }[] = [];
  for (const entry of entries) {
    const [name = '', kindName = '', ...rest] = entry.split(':');
    if (!STORE_NAME.test(name) || rest.length > 0) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is not name:kind with a lower-case name` });
      return z.NEVER;
    }
    const parsedKind = kind.safeParse(kindName);
    if (!parsedKind.success) {
      ctx.addIssue({ code: 'custom', message: `store "${name}" has unknown provider kind "${kindName}" (known: ${PROVIDER_KINDS.join(', ')})` });
      return z.NEVER;
    }
    if (stores.some((store) => store.name === name)) {
      ctx.addIssue({ code: 'custom', message: `store "${name}" is named twice` });
      return z.NEVER;
    }
    const sharing = stores.find((store) => storeEnvPrefix(store.name) === storeEnvPrefix(name));
    if (sharing !== undefined) {
      ctx.addIssue({ code: 'custom', message: `stores "${sharing.name}" and "${name}" would share the settings prefix ${storeEnvPrefix(name)}` });
      return z.NEVER;
    }
    stores.push({ name, kind: parsedKind.data });
  }
  if (stores.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'at least one store is needed' });
    return z.NEVER;
  }
  return stores;
});

/** Settings of the whole service. Keys are the environment variables' names. */
const serviceSchema = z.object({
  REDIS_URL: redisUrl.optional(),
  REDIS_CLUSTER_NODES: clusterNodes.optional(),
  QUEUE_PREFIX: nonBlank.default('{kyozo}'),
  HOST: nonBlank.default('127.0.0.1'),
  PORT: int(0, 65535).default(3000),
  API_TOKENS: apiTokens.default([]),
  CORS_ORIGINS: corsOrigins.default([]),
  URL_SIGNING_SECRET: z.string().min(16, 'at least 16 characters').optional(),
  STORES: storesSetting.default([{ name: 'default', kind: 'disk' }]),
  STORAGE_ROOT_DIR: nonBlank.default('./data'),
  ACCESS_THRESHOLD: int(1).default(5),
  HOT_STORAGE_TTL: int(1).default(3600),
  // 0 turns the hot tier off (`hybrid-hot.ts`): a hybrid store then serves from cold, backup behind it.
  HOT_MAX_BYTES: int(0).default(128 * MIB),
  WORKER_CONCURRENCY: int(1).default(8),
  WORKER_METRICS_PORT: int(0, 65535).optional(),
  // The backoff doubles per attempt (from 1 s): the 16th retry would wait 9 hours, the 40th thousands of years.
  JOB_ATTEMPTS: int(1, 15, 'at most 15 (the exponential backoff waits hours by then; outages are waited out by parking, UNAVAILABLE_RETRY_SECONDS)').default(5),
  WORKER_SHUTDOWN_TIMEOUT_MS: timerMs(0, MAX_TIMER_MS - SHUTDOWN_DEADLINE_EXTRA_MS).default(30_000),
  UNAVAILABLE_RETRY_SECONDS: int(0).default(3600),
  // Default min(256 KiB, MAX_OBJECT_BYTES): see loadConfig.
  STAGING_INLINE_MAX: int(0, MAX_STAGING_INLINE, `at most ${MAX_STAGING_INLINE} (16 MiB): inline bodies are held in web memory and in Redis job data`).optional(),
  STAGING_TTL: int(1).default(7200),
  // Where staged bodies go: disk under the root (one machine, or a shared volume), or s3 (`STAGING_S3_*`).
  STAGING_KIND: z.enum(['disk', 's3']).default('disk'),
  MAX_OBJECT_BYTES: int(1).default(5 * GIB),
  WAIT_TIMEOUT_MS: timerMs(1).default(30_000),
  TIER_CRON: cron.default('*/5 * * * *'),
  CLEANUP_CRON: cron.default('0 * * * *'),
  BACKUP_CRON: cron.default('0 3 * * *'),
  BACKUP_STORE: z.string().optional(),
  BACKUP_KEEP: int(1).default(7),
  VERSION_RETENTION_COUNT: int(1).default(100),
  VERSION_RETENTION_DAYS: int(0).default(0),
  // How long finished jobs stay in Redis: what `GET /v1/jobs/:id`, `?wait=true` and an Idempotency-Key repeat find.
  COMPLETED_JOBS_KEEP_SECONDS: int(1).default(DEFAULT_JOB_RETENTION.completedAgeSeconds),
  COMPLETED_JOBS_KEEP_COUNT: int(1).default(DEFAULT_JOB_RETENTION.completedCount),
  FAILED_JOBS_KEEP_SECONDS: int(1).default(DEFAULT_JOB_RETENTION.failedAgeSeconds),
  FAILED_JOBS_KEEP_COUNT: int(1).default(DEFAULT_JOB_RETENTION.failedCount),
  EVENTS_MAXLEN: int(1).default(100_000),
  WEBHOOK_URLS: webhookUrls.default([]),
  WEBHOOK_SECRET: z.string().optional(),
  LOG_LEVEL: logLevel.default('info'),
});

/** A refinement by a provider's own check (it throws what is wrong): the store refuses at start what it would at open. */
function checkedBy(check: (value: string) => unknown): (value: string, ctx: z.RefinementCtx) => void {
  return (value, ctx) => {
    try {
      check(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  };
}

/** Settings a store may override with its own prefix. */
const storeSchema = z.object({
  DISK_FSYNC: bool.default(true),
  RAM_MAX_BYTES: int(1).default(256 * MIB),
  GIT_REPO_PATH: nonBlank.optional(),
  GIT_BRANCH: nonBlank.default('main'),
  GIT_USER_NAME: nonBlank.default('Kyozo'),
  GIT_USER_EMAIL: nonBlank.default('kyozo@localhost'),
  GIT_LOCK: z.enum(['local', 'redis']).default('local'),
  S3_BUCKET: nonBlank.optional(),
  // Empty is no prefix; spaces around one would silently move the data, as for the names refused by `nonBlank`.
  S3_PREFIX: z.string().refine((value) => value.trim() === value, 'must not start or end with spaces').default(''),
  AWS_REGION: nonBlank.default('us-east-1'),
  S3_ENDPOINT: httpEndpoint.optional(),
  // Presigned URLs name this endpoint instead of S3_ENDPOINT (which may be reachable only inside the service's network).
  S3_PUBLIC_ENDPOINT: httpEndpoint.optional(),
  S3_FORCE_PATH_STYLE: bool.default(false),
  S3_CHECKSUM: z.enum(['WHEN_SUPPORTED', 'WHEN_REQUIRED']).optional(),
  S3_MULTIPART_THRESHOLD: int(5 * MIB, MAX_SINGLE_PUT, `at most ${MAX_SINGLE_PUT} (S3 takes 5 GiB in one PutObject, Node ${bufferConstants.MAX_LENGTH} bytes in one Buffer): bodies up to it are held in memory and sent whole`).default(16 * MIB),
  S3_VERSIONING: z.enum(['auto', 'native', 'explicit'], { message: 'expected auto, native or explicit' }).default('auto'),
  HYBRID_HOT: kind.default('ram'),
  HYBRID_COLD: kind.default('s3'),
  HYBRID_BACKUP: kind.default('disk'),
});

/** A git store's settings: its branch and committer checked as the store checks them when it opens. */
const gitStoreSchema = storeSchema.extend({
  GIT_BRANCH: storeSchema.shape.GIT_BRANCH.superRefine(checkedBy(validateBranchName)),
  GIT_USER_NAME: storeSchema.shape.GIT_USER_NAME.superRefine(checkedBy((name) => checkIdentityPart(name, 'the committer name', true))),
  GIT_USER_EMAIL: storeSchema.shape.GIT_USER_EMAIL.superRefine(checkedBy((email) => checkIdentityPart(email, 'the committer email', false))),
});

type ServiceSettings = z.output<typeof serviceSchema>;
export type StoreSettings = z.output<typeof storeSchema> & { name: string; kind: StoreKind; rootDir: string };

export interface Config {
  redis: { url: string; explicit: boolean; clusterNodes?: { host: string; port: number }[] };
  queuePrefix: string;
  host: string;
  port: number;
  apiTokens: string[];
  /** Origins (`*`: any) whose pages may call `/v1` from a browser; signed URLs take every origin. */
  corsOrigins: string[];
  /** Signs URLs for stores without native presigning; when unset one random secret is shared through Redis. */
  urlSigningSecret?: string;
  stores: { name: string; kind: StoreKind }[];
  storageRootDir: string;
  tiering: { accessThreshold: number; hotTtlSeconds: number; hotMaxBytes: number };
  /** `unavailableRetrySeconds`: how long a job whose backend is down keeps retrying after its attempts ran out. */
  workers: { concurrency: number; attempts: number; shutdownTimeoutMs: number; unavailableRetrySeconds: number; metricsPort?: number };
  payloads: { stagingInlineMax: number; stagingTtlSeconds: number; stagingKind: 'disk' | 's3'; maxObjectBytes: number; waitTimeoutMs: number };
  maintenance: { tierCron: string; cleanupCron: string; backupCron: string; backupStore?: string; backupKeep: number };
  retention: { versionCount: number; versionDays: number };
  /** Finished jobs kept, per queue: the newest `*Count`, none older than `*AgeSeconds` (`jobs/queue.ts`). */
  jobRetention: JobRetention;
  events: { maxLen: number; webhookUrls: string[]; webhookSecret?: string };
  logLevel: ServiceSettings['LOG_LEVEL'];
  /** The environment the config was read from, for per-store lookups. */
  env: Readonly<Record<string, string | undefined>>;
}

/**
 * Variables that are secrets: errors name them, not their values. Webhook URLs count: a receiver's secret is often
 * in its path (errors name the entry by its number).
 */
const SECRET_VARIABLE = /SECRET|TOKEN|PASSWORD|WEBHOOK_URLS/;

/** A value as a config error shows it: a secret not at all, the `user:password@` of a URL masked (to its last `@`). */
function shownValue(name: string, value: string | undefined): string {
  if (SECRET_VARIABLE.test(name)) return '(value not shown)';
  // Whatever comes before the last `@` may be a password, with `//` after the scheme or not (`redis:PW@host`).
  return JSON.stringify((value ?? '').replace(/^([a-z][a-z0-9+.-]*:\/*)?.*@/i, '$1***@'));
}

function parse<S extends z.ZodType>(
  schema: S,
  values: Record<string, string | undefined>,
  variableOf: (name: string) => string = (name) => name,
): z.output<S> {
  const result = schema.safeParse(values);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const name = String(issue?.path[0] ?? '');
  throw new ConfigError(`${variableOf(name)}=${shownValue(name, values[name])}: ${issue?.message ?? 'invalid'}`);
}

/** Empty strings count as unset, as in most twelve-factor services (`FOO=` in an .env file). */
function definedOnly(env: Readonly<Record<string, string | undefined>>, names: readonly string[], prefix = '') {
  const values: Record<string, string | undefined> = {};
  for (const name of names) {
    const value = env[`${prefix}${name}`];
    if (value !== undefined && value !== '') values[name] = value;
  }
  return values;
}

/** The longest wait between two retries of a job parked while its backend is down (src/workers/worker.ts). */
export const PARKED_RETRY_MAX_SECONDS = 60;

export function loadConfig(env: Readonly<Record<string, string | undefined>> = process.env): Config {
  const s = parse(serviceSchema, definedOnly(env, Object.keys(serviceSchema.shape)));
  for (const store of s.STORES) storeConfig({ env, storageRootDir: s.STORAGE_ROOT_DIR }, store); // fail at start, not at first use
  if (s.BACKUP_STORE !== undefined && !s.STORES.some((store) => store.name === s.BACKUP_STORE)) {
    throw new ConfigError(`BACKUP_STORE="${s.BACKUP_STORE}": no such store in STORES`);
  }
  // Cluster: BullMQ's scripts and ours touch several keys at once, which must hash to one slot.
  if (s.REDIS_CLUSTER_NODES !== undefined && s.REDIS_CLUSTER_NODES.length > 0 && !hasHashTag(s.QUEUE_PREFIX)) {
    throw new ConfigError(`QUEUE_PREFIX="${s.QUEUE_PREFIX}": with REDIS_CLUSTER_NODES it needs a hash tag, e.g. {kyozo}`);
  }
  // With no tokens the API is open to whoever reaches it: every site's pages would act through their visitors' browsers.
  if (s.CORS_ORIGINS.includes('*') && s.API_TOKENS.length === 0) {
    throw new ConfigError('CORS_ORIGINS="*": without API_TOKENS a page on any site could read and write through its visitors\' browsers; set API_TOKENS, or list the origins');
  }
  if (s.STAGING_INLINE_MAX !== undefined && s.STAGING_INLINE_MAX > s.MAX_OBJECT_BYTES) {
    throw new ConfigError(`STAGING_INLINE_MAX="${s.STAGING_INLINE_MAX}": must not exceed MAX_OBJECT_BYTES (${s.MAX_OBJECT_BYTES})`);
  }
  // A job parked while its backend is down still needs its staged body: cleanup must not take it first.
  if (s.STAGING_TTL <= s.UNAVAILABLE_RETRY_SECONDS + PARKED_RETRY_MAX_SECONDS) {
    throw new ConfigError(
      `STAGING_TTL="${s.STAGING_TTL}": must be longer than UNAVAILABLE_RETRY_SECONDS (${s.UNAVAILABLE_RETRY_SECONDS}) + ${PARKED_RETRY_MAX_SECONDS} s, or cleanup can remove the body of a job still being retried`,
    );
  }
  // The staging area in s3 reads its settings as a store named `staging` would (STAGING_S3_BUCKET...): such a store
  // would always share its place.
  if (s.STAGING_KIND === 's3' && s.STORES.some((store) => storeEnvPrefix(store.name) === STAGING_ENV_PREFIX)) {
    throw new ConfigError(`STORES: with STAGING_KIND=s3 no store may be named "staging": its settings (${STAGING_ENV_PREFIX}S3_*) are the staging area's; rename the store`);
  }
  return {
    redis: {
      url: s.REDIS_URL ?? 'redis://127.0.0.1:6379',
      explicit: s.REDIS_URL !== undefined,
      clusterNodes: s.REDIS_CLUSTER_NODES !== undefined && s.REDIS_CLUSTER_NODES.length > 0 ? s.REDIS_CLUSTER_NODES : undefined,
    },
    queuePrefix: s.QUEUE_PREFIX,
    host: s.HOST,
    port: s.PORT,
    apiTokens: s.API_TOKENS,
    corsOrigins: s.CORS_ORIGINS,
    urlSigningSecret: s.URL_SIGNING_SECRET,
    stores: s.STORES,
    storageRootDir: path.resolve(s.STORAGE_ROOT_DIR),
    tiering: { accessThreshold: s.ACCESS_THRESHOLD, hotTtlSeconds: s.HOT_STORAGE_TTL, hotMaxBytes: s.HOT_MAX_BYTES },
    workers: {
      concurrency: s.WORKER_CONCURRENCY,
      attempts: s.JOB_ATTEMPTS,
      shutdownTimeoutMs: s.WORKER_SHUTDOWN_TIMEOUT_MS,
      unavailableRetrySeconds: s.UNAVAILABLE_RETRY_SECONDS,
      ...(s.WORKER_METRICS_PORT === undefined ? {} : { metricsPort: s.WORKER_METRICS_PORT }),
    },
    payloads: {
      stagingInlineMax: s.STAGING_INLINE_MAX ?? Math.min(DEFAULT_STAGING_INLINE, s.MAX_OBJECT_BYTES),
      stagingTtlSeconds: s.STAGING_TTL,
      stagingKind: s.STAGING_KIND,
      maxObjectBytes: s.MAX_OBJECT_BYTES,
      waitTimeoutMs: s.WAIT_TIMEOUT_MS,
    },
    maintenance: {
      // A cron set to the empty string turns its schedule off (DESIGN §6): the one place where empty is not unset.
      tierCron: env.TIER_CRON === '' ? '' : s.TIER_CRON,
      cleanupCron: env.CLEANUP_CRON === '' ? '' : s.CLEANUP_CRON,
      backupCron: env.BACKUP_CRON === '' ? '' : s.BACKUP_CRON,
      backupStore: s.BACKUP_STORE,
      backupKeep: s.BACKUP_KEEP,
    },
    retention: { versionCount: s.VERSION_RETENTION_COUNT, versionDays: s.VERSION_RETENTION_DAYS },
    jobRetention: {
      completedAgeSeconds: s.COMPLETED_JOBS_KEEP_SECONDS,
      completedCount: s.COMPLETED_JOBS_KEEP_COUNT,
      failedAgeSeconds: s.FAILED_JOBS_KEEP_SECONDS,
      failedCount: s.FAILED_JOBS_KEEP_COUNT,
    },
    events: { maxLen: s.EVENTS_MAXLEN, webhookUrls: s.WEBHOOK_URLS, webhookSecret: s.WEBHOOK_SECRET },
    logLevel: s.LOG_LEVEL,
    env,
  };
}

export function storeEnvPrefix(storeName: string): string {
  return `${storeName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_`;
}

/** The name the staging area's settings go by with `STAGING_KIND=s3` (`providers/index.ts`), and their prefix. */
export const STAGING_STORE_NAME = 'staging';
const STAGING_ENV_PREFIX = storeEnvPrefix(STAGING_STORE_NAME);

/** The settings of one store: `<STORE>_<NAME>` when set, else `<NAME>`, else the default. */
export function storeConfig(
  config: Pick<Config, 'env' | 'storageRootDir'>,
  store: { name: string; kind: StoreKind },
): StoreSettings {
  const names = Object.keys(storeSchema.shape);
  const prefix = storeEnvPrefix(store.name);
  const own = definedOnly(config.env, names, prefix);
  const values = { ...definedOnly(config.env, names), ...own };
  const settings = parse(store.kind === 'git' ? gitStoreSchema : storeSchema, values, (name) => (name in own ? `${prefix}${name}` : name));
  return { ...settings, ...store, rootDir: path.resolve(config.storageRootDir) };
}
