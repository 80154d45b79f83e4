/**
 * Model-based test of the provider contract (DESIGN §4, types.ts, README "The contract, in short"): fast-check
 * generates sequences of operations over a small key space, applies each to a real provider and to a tiny in-memory
 * model of what the contract promises, and compares every observable result after each step:
 *
 * - write / createVersion / restoreVersion / delete (with a Buffer, string or stream body, `expectedEtag`, a fence
 *   that passes or refuses): success or the error (INVALID_ARGUMENT, PRECONDITION_FAILED for `ifMatch` /
 *   `ifNoneMatch`, NOT_FOUND for a missing version, the fence's own error), the fence passed exactly once, and the
 *   returned ObjectInfo / VersionInfo (size, sha256 etag, contentType, lower-cased metadata, message, author,
 *   versionId where the model knows it);
 * - read / stat (current or at a version, including another key's version id and one forgotten by
 *   `delete { allVersions }`), range reads: bytes, size, etag, contentType, metadata, versionId;
 * - list with a prefix, paged by `limit` + cursor: UTF-8 byte order, each key exactly once, no page over the limit,
 *   every item as stat describes it; and a listing continued after a write or delete between its pages (the cursor
 *   names a position: what follows it now);
 * - listVersions paged by `limit` + cursor: newest first, each version once, message/author/etag/size; continued
 *   after a new version or the removal of an older one between pages;
 * - deleteVersion (retention): idempotent, the current object stays as it was;
 * - writes and versions of one key at once (with reads among them): every one lands as a version where it should,
 *   reads see a whole object, and the current object is the newest version when all of them are versions;
 * - stats: objects, bytes and versions (the total that listVersions shows over every key).
 *
 * On hybrid the cold tier can also be switched off (every call PROVIDER_UNAVAILABLE): mutations must then fail and
 * change nothing, and reads, listings and stats must come from backup exactly as cold would have answered them
 * (README, hybrid), except where the README says backup may not know (a key two mutations touched at once, or one a
 * mutation was tried on during the outage, may answer 503; a version id backup has no copy of answers 503). Every
 * sequence ends with a full comparison, and on hybrid a second one from backup alone.
 *
 * What providers may legitimately do differently is taken from their capabilities and the README: `every-write`
 * providers (git, s3 on a versioned bucket) record plain writes as versions too (their message and author are the
 * store's choice, learned at first sight and then held stable); `explicit` ones record only createVersion and
 * restore; versions made without an author carry `capabilities.defaultAuthor`; s3 takes printable ASCII content
 * types only; disk checks preconditions before reading the body.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Author, Body, Fenced, ObjectInfo, Page, StorageProvider, VersionInfo } from '../../src/providers/types.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { createHybridProvider } from '../../src/providers/hybrid.js';
import { RamProvider } from '../../src/providers/ram.js';
import { createS3Provider } from '../../src/providers/s3.js';
import { closeRedis } from '../../src/redis.js';
import { fixtures } from '../contract/providers.js';
import { connectRedis, deleteKeys, uniquePrefix } from '../support/redis.js';
import { s3ProviderOptions, sharedS3 } from '../support/s3.js';

/** Fixed, so that a run is repeatable; MODEL_SEED and MODEL_RUNS explore further by hand. */
const SEED = Number(process.env.MODEL_SEED ?? 20_240_611);

const sha256 = (content: Uint8Array | string) => createHash('sha256').update(content).digest('hex');

/** UTF-8 byte order, computed independently of keys.ts. */
const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

// ---- the generated operations -------------------------------------------------------------------------------------

/**
 * Keys that stress each store's mapping of keys to its own names and its listing order: nested keys beside keys that
 * sort between a key and its children (`a b`, `a-c` before `a/b`), characters disk and git escape (`~`, `%`, `+`, a
 * leading `.`), the store's own reserved names one segment off (`.kyozo` without its slash), a segment longer than
 * disk's 200-byte pieces beside one that ends where a piece would, composed and decomposed é, and astral characters.
 */
const LONG = 'L'.repeat(250);
const LONG_NESTED = `${'L'.repeat(200)}/${'L'.repeat(49)}`;
const KEYS = ['a', 'a/b', 'a-c', 'é/x', '\u{1F600}', 'z/日本', 'a b', 'a~', 'a+/%7E', '.kyozo', 'x/.kyozo/meta', LONG, LONG_NESTED, 'e\u0301/x'] as const;
const PREFIXES = ['', 'a', 'a/', 'é', '\u{1F600}', 'z/', 'q', 'a ', 'a+', '.', 'x/.', 'L'.repeat(200), 'L'.repeat(210), 'e'] as const;
const CONTENTS = ['', 'one', 'two', 'grüße 🌍', 'x'.repeat(70)] as const;
const CONTENT_TYPES = [undefined, 'text/plain', 'application/json; charset=utf-8', '  text/csv  ', 'text/plain; name="café"'] as const;
/** Values that a header-based store must carry exactly: non-ASCII, literal `%` sequences, spaces at the ends, empty. */
const METADATA = [
  undefined,
  {},
  { Owner: 'Ada' },
  { 'build-id': '42', note: 'grüße' },
  { pad: ' spaced ' },
  { enc: 'a%20b', pct: '100%', tick: '%E2%9C%93' },
  { empty: '' },
] as const;
const MESSAGES = ['first', 'fix: thing', 'multi\nline message', 'ünïcode ✓', 'progress 100% a%20b'] as const;
const AUTHORS = [
  undefined,
  { name: 'Ada', email: 'ada@example.com' },
  { name: 'Grace Hopper', email: 'grace@example.org' },
  { name: 'Zoë %41 Ünal', email: 'zoe%40@example.com' },
] as const;

/** Which etag an `ifMatch` names: the model's current one, one of a content (may or may not be current), `*`, a list. */
type IfMatchChoice = { kind: 'current' } | { kind: 'content'; content: number } | { kind: 'any' } | { kind: 'list'; content: number };
/** Which version an operation names: one of the key's (by index into the model's list), another key's, a forgotten one, a bogus one. */
type VersionChoice = { kind: 'own'; index: number } | { kind: 'other-key'; key: number; index: number } | { kind: 'forgotten'; index: number } | { kind: 'bogus' };

/**
 * How a mutation is made besides its arguments: the body as a Buffer, a string or a stream; an `expectedEtag` that is
 * the content's or not (INVALID_ARGUMENT, nothing changed); a fence that lets it through (passed exactly once) or
 * refuses (its own error comes back unchanged, nothing changed).
 */
type Extra = { body?: 'string' | 'stream'; expectedEtag?: 'right' | 'wrong'; fence?: 'pass' | 'refuse' };

type Op =
  | { op: 'write'; key: number; content: number; contentType: number; metadata: number; ifMatch?: IfMatchChoice; ifNoneMatch: boolean; extra?: Extra }
  | { op: 'createVersion'; key: number; content: number; contentType: number; metadata: number; message: number; author: number; ifMatch?: IfMatchChoice; ifNoneMatch: boolean; extra?: Extra }
  | { op: 'restore'; key: number; version: VersionChoice; message?: number; author: number; fence?: 'pass' | 'refuse' }
  | { op: 'delete'; key: number; allVersions: boolean; fence?: 'pass' | 'refuse' }
  | { op: 'read'; key: number; version?: VersionChoice }
  | { op: 'stat'; key: number; version?: VersionChoice }
  | { op: 'range'; key: number; start: number; end: number }
  | { op: 'list'; prefix: number; limit: number }
  | { op: 'listVersions'; key: number; limit: number }
  | { op: 'stats' }
  /** A listing whose later pages are asked for after a mutation: they continue from the position the cursor names. */
  | { op: 'listAcross'; prefix: number; limit: number; mutate: { key: number; content?: number } }
  /** A version listing whose later pages are asked for after a new version of the key, or a removed older one. */
  | { op: 'versionsAcross'; key: number; limit: number; mutate: { kind: 'version'; content: number } | { kind: 'deleteVersion'; index: number } }
  /** Retention's removal of one version (providers that have `deleteVersion`); never the newest on every-write ones. */
  | { op: 'deleteVersion'; key: number; version: VersionChoice }
  /** Unconditional writes and versions of one key at once. */
  | { op: 'concurrent'; key: number; mutations: { kind: 'write' | 'version' | 'read'; content: number }[] }
  /** The same key read several times in a row (a tiered store promotes it to its hot tier and serves it from there). */
  | { op: 'reread'; key: number; times: number }
  /** Hybrid only: the cold tier goes down (every call PROVIDER_UNAVAILABLE) or comes back; other stores ignore it. */
  | { op: 'outage'; down: boolean };

const index = (n: number) => fc.nat({ max: n - 1 });
const ifMatchArb: fc.Arbitrary<IfMatchChoice | undefined> = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.constant({ kind: 'current' as const }) },
  { weight: 1, arbitrary: index(CONTENTS.length).map((content) => ({ kind: 'content' as const, content })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'any' as const }) },
  { weight: 1, arbitrary: index(CONTENTS.length).map((content) => ({ kind: 'list' as const, content })) },
);
const versionArb: fc.Arbitrary<VersionChoice> = fc.oneof(
  { weight: 6, arbitrary: fc.nat(7).map((i) => ({ kind: 'own' as const, index: i })) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('other-key' as const), key: index(KEYS.length), index: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.nat(7).map((i) => ({ kind: 'forgotten' as const, index: i })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'bogus' as const }) },
);
/** Most operations name one of the first three keys, so that reads find what writes made. */
const key = fc.oneof({ weight: 3, arbitrary: fc.nat(2) }, { weight: 2, arbitrary: index(KEYS.length) });
const fenceArb = fc.constantFrom('pass' as const, 'refuse' as const);
/** Half the writes and versions plain; the others with a stream or string body, an expected etag, a fence. */
const extraArb: fc.Arbitrary<Extra | undefined> = fc.option(
  fc.record({ body: fc.constantFrom('string' as const, 'stream' as const), expectedEtag: fc.constantFrom('right' as const, 'wrong' as const), fence: fenceArb }, { requiredKeys: [] }),
  { nil: undefined },
);
/** One write in four is create-only. */
const createOnly = fc.nat(3).map((n) => n === 0);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      key,
      content: index(CONTENTS.length),
      contentType: index(CONTENT_TYPES.length),
      metadata: index(METADATA.length),
      ifMatch: ifMatchArb,
      ifNoneMatch: createOnly,
      extra: extraArb,
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('createVersion' as const),
      key,
      content: index(CONTENTS.length),
      contentType: index(CONTENT_TYPES.length),
      metadata: index(METADATA.length),
      message: index(MESSAGES.length),
      author: index(AUTHORS.length),
      ifMatch: ifMatchArb,
      ifNoneMatch: createOnly,
      extra: extraArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record(
      { op: fc.constant('restore' as const), key, version: versionArb, message: index(MESSAGES.length), author: index(AUTHORS.length), fence: fenceArb },
      { requiredKeys: ['op', 'key', 'version', 'author'] },
    ),
  },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant('delete' as const), key, allVersions: fc.nat(2).map((n) => n === 0), fence: fenceArb }, { requiredKeys: ['op', 'key', 'allVersions'] }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('read' as const), key, version: versionArb }, { requiredKeys: ['op', 'key'] }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('stat' as const), key, version: versionArb }, { requiredKeys: ['op', 'key'] }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('range' as const), key, start: fc.nat(6), end: fc.nat(80) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('list' as const), prefix: index(PREFIXES.length), limit: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('listVersions' as const), key, limit: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'stats' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('listAcross' as const),
      prefix: index(PREFIXES.length),
      limit: fc.integer({ min: 1, max: 2 }),
      mutate: fc.record({ key, content: index(CONTENTS.length) }, { requiredKeys: ['key'] }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('versionsAcross' as const),
      key,
      limit: fc.integer({ min: 1, max: 2 }),
      mutate: fc.oneof(
        index(CONTENTS.length).map((content) => ({ kind: 'version' as const, content })),
        fc.nat(7).map((i) => ({ kind: 'deleteVersion' as const, index: i })),
      ),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('deleteVersion' as const), key, version: versionArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('reread' as const), key, times: fc.integer({ min: 2, max: 4 }) }) },
  { weight: 2, arbitrary: fc.boolean().map((down) => ({ op: 'outage' as const, down })) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('concurrent' as const),
      key,
      mutations: fc.array(fc.record({ kind: fc.constantFrom('write' as const, 'version' as const, 'read' as const), content: index(CONTENTS.length) }), { minLength: 2, maxLength: 4 }),
    }),
  },
);

// ---- the model ----------------------------------------------------------------------------------------------------

/** A field the store chooses itself (an every-write version's message): learned when first seen, then held. */
const LEARN = Symbol('learn');

interface ModelObject {
  content: Buffer;
  contentType: string;
  metadata: Record<string, string>;
  /** undefined: the contract says the current object has none (a plain write on an explicit store). */
  versionId?: string;
}

interface ModelVersion {
  versionId: string;
  content: Buffer;
  contentType: string;
  metadata: Record<string, string>;
  message: string | undefined | typeof LEARN;
  author: Author | undefined | typeof LEARN;
}

class Model {
  readonly objects = new Map<string, ModelObject>();
  /** Per key, oldest first. */
  readonly versions = new Map<string, ModelVersion[]>();
  /** Version ids `delete { allVersions }` forgot, by key: reads and restores of them are NOT_FOUND. */
  readonly forgotten = new Map<string, string[]>();

  versionsOf(key: string): ModelVersion[] {
    return this.versions.get(key) ?? [];
  }

  addVersion(key: string, version: ModelVersion): void {
    this.versions.set(key, [...this.versionsOf(key), version]);
  }
}

const normalizeMetadata = (metadata: Record<string, string> | undefined) =>
  Object.fromEntries(Object.entries(metadata ?? {}).map(([name, value]) => [name.toLowerCase(), value]));
const normalizeContentType = (contentType: string | undefined) => (contentType === undefined ? 'application/octet-stream' : contentType.trim());
const normalizeAuthor = (author: Author | undefined) => (author === undefined ? undefined : { name: author.name, ...(author.email ? { email: author.email } : {}) });

// ---- running one sequence -----------------------------------------------------------------------------------------

type Outcome<T> = { ok: true; value: T } | { ok: false; code: string; message: string; error: unknown };

/** Outcomes seen per operation (MODEL_COVERAGE=1 prints them): that the sequences reach both sides of every rule. */
const coverage = new Map<string, number>();
let currentOp = '';

async function outcome<T>(promise: Promise<T>): Promise<Outcome<T>> {
  try {
    const value = await promise;
    coverage.set(`${currentOp} ok`, (coverage.get(`${currentOp} ok`) ?? 0) + 1);
    const tier = (value as { tier?: string; info?: { tier?: string } } | undefined)?.tier ?? (value as { info?: { tier?: string } } | undefined)?.info?.tier;
    if (tier) coverage.set(`${currentOp} tier ${tier}`, (coverage.get(`${currentOp} tier ${tier}`) ?? 0) + 1);
    return { ok: true, value };
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    coverage.set(`${currentOp} ${String(code)}`, (coverage.get(`${currentOp} ${String(code)}`) ?? 0) + 1);
    return { ok: false, code: typeof code === 'string' ? code : `thrown ${(error as Error).name}`, message: (error as Error).message, error };
  }
}

function expectFailure(result: Outcome<unknown>, code: string, what: string): void {
  expect(result.ok ? 'succeeded' : result.code, `${what}: expected ${code}${result.ok ? '' : ` (${result.message})`}`).toBe(code);
}

function expectSuccess<T>(result: Outcome<T>, what: string): T {
  if (!result.ok) expect.fail(`${what}: expected success, got ${result.code}: ${result.message}`);
  return result.value;
}

async function allVersions(provider: StorageProvider, key: string): Promise<VersionInfo[]> {
  const versions: VersionInfo[] = [];
  let cursor: string | undefined;
  do {
    const page = await provider.listVersions(key, cursor ? { cursor } : undefined);
    versions.push(...page.items);
    cursor = page.cursor;
  } while (cursor);
  return versions;
}

async function drain(body: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

/** A fence as a job passes one: counts its calls; refuses with its own error when asked to. */
class FenceProbe {
  readonly refusal = new Error('this run lost its lock (model test)');
  calls = 0;

  constructor(private readonly mode: 'pass' | 'refuse' | undefined) {}

  get refuses(): boolean {
    return this.mode === 'refuse';
  }

  option(): Fenced {
    if (this.mode === undefined) return {};
    return {
      fence: async () => {
        this.calls++;
        if (this.mode === 'refuse') throw this.refusal;
      },
    };
  }

  expectPassedOnce(what: string): void {
    if (this.mode !== undefined) expect(this.calls, `${what}: the fence is passed once`).toBe(1);
  }
}

/** The options a write and a createVersion share, each left out when the operation has none. */
function writeOptions(contentType: string | undefined, metadata: Record<string, string> | undefined, ifMatch: string | string[] | undefined, ifNoneMatch: boolean) {
  return {
    ...(contentType !== undefined ? { contentType } : {}),
    ...(metadata !== undefined ? { metadata: { ...metadata } } : {}),
    ...(ifMatch !== undefined ? { ifMatch } : {}),
    ...(ifNoneMatch ? { ifNoneMatch: '*' as const } : {}),
  };
}

class Runner {
  readonly model = new Model();
  readonly bogusId: string;
  readonly everyWrite: boolean;
  readonly defaultAuthor: Author | undefined;
  /** s3 (and a hybrid on an s3 cold tier) takes printable ASCII content types only (README, s3): others are INVALID_ARGUMENT. */
  readonly asciiContentTypes: boolean;

  /** While the cold tier of a hybrid store is down: mutations fail unavailable, and backup must answer as cold would. */
  private down = false;
  /**
   * Keys two mutations touched at once: the hybrid's ledger may keep them pending (backup possibly behind, README
   * "Backup repair"), so that while cold is down they may answer 503, and backup may list their versions in another
   * order (README: "Known, not fixed").
   */
  private readonly overlapped = new Set<string>();
  /**
   * Keys a mutation was tried on while cold was down: it may have landed at cold (README: unavailable is not "did not
   * happen"), so the ledger keeps them and backup's NOT_FOUND of them is answered 503 rather than trusted.
   */
  private readonly uncertain = new Set<string>();

  constructor(
    readonly provider: StorageProvider,
    private readonly coldSwitch?: (down: boolean) => void,
    /** s3rver writes an object's bytes and its metadata as two files: a read racing a write may get one of each. */
    private readonly readsMayTear = false,
  ) {
    this.everyWrite = provider.capabilities.versioning === 'every-write';
    this.defaultAuthor = normalizeAuthor(provider.capabilities.defaultAuthor);
    this.asciiContentTypes = provider.kind === 's3' || provider.kind === 'hybrid';
    this.bogusId = provider.kind === 'git' ? '0'.repeat(40) : '0000000000000000000000000z';
  }

  /** The body, `expectedEtag` and fence a mutation's `extra` asks for, and what its fence saw. */
  private guarded(content: Buffer, extra: Extra | undefined): { body: Body; opts: Fenced & { expectedEtag?: string }; fence: FenceProbe } {
    const fence = new FenceProbe(extra?.fence);
    const body: Body = extra?.body === 'string' ? content.toString('utf8') : extra?.body === 'stream' ? Readable.from([Buffer.from(content)]) : Buffer.from(content);
    const expectedEtag = extra?.expectedEtag === undefined ? undefined : extra.expectedEtag === 'right' ? sha256(content) : sha256('something else');
    return { body, opts: { ...(expectedEtag ? { expectedEtag } : {}), ...fence.option() }, fence };
  }

  /**
   * The refusals a write or version meets before it changes anything, in the orders the contract allows: argument
   * checks first (content type, expected etag, or preconditions before the body is read), then the fence and the
   * preconditions in either order (types.ts: the
   * fence runs after the preconditions, except where check and commit are one synchronous step). True when the
   * mutation was expected to fail (and did as allowed).
   */
  private expectRefusal(result: Outcome<unknown>, contentType: string | undefined, extra: Extra | undefined, holds: boolean, fence: FenceProbe, what: string): boolean {
    if (this.refusesContentType(contentType)) return expectFailure(result, 'INVALID_ARGUMENT', what), true;
    if (extra?.expectedEtag === 'wrong') {
      // disk checks preconditions before it reads the body (README, disk), the others after: either refusal is right.
      if (!holds && !result.ok && result.code === 'PRECONDITION_FAILED') return true;
      return expectFailure(result, 'INVALID_ARGUMENT', what), true;
    }
    if (fence.refuses) {
      if (!result.ok && result.error === fence.refusal) return true;
      if (!holds) return expectFailure(result, 'PRECONDITION_FAILED', what), true;
      expect.fail(`${what}: expected the fence's own refusal, got ${result.ok ? 'success' : `${result.code}: ${result.message}`}`);
    }
    if (!holds) return expectFailure(result, 'PRECONDITION_FAILED', what), true;
    return false;
  }

  /** Whether the store refuses a content type as an argument (checked before any precondition). */
  private refusesContentType(contentType: string | undefined): boolean {
    return this.asciiContentTypes && contentType !== undefined && /[^\x20-\x7e]/.test(contentType);
  }

  /** The etags an `ifMatch` choice names, against the model's current object of `key`. */
  private ifMatch(choice: IfMatchChoice | undefined, key: string): string | string[] | undefined {
    if (choice === undefined) return undefined;
    const current = this.model.objects.get(key);
    switch (choice.kind) {
      case 'current':
        return current === undefined ? sha256('never written') : sha256(current.content);
      case 'content':
        return sha256(CONTENTS[choice.content]!);
      case 'any':
        return '*';
      case 'list':
        return [sha256(CONTENTS[choice.content]!), current === undefined ? sha256('never written') : sha256(current.content)];
    }
  }

  /** Whether the contract lets a conditional write of `key` go ahead (if-match.ts's rule, restated). */
  private preconditionsHold(key: string, ifMatch: string | string[] | undefined, ifNoneMatch: boolean): boolean {
    const current = this.model.objects.get(key);
    const etag = current === undefined ? undefined : sha256(current.content);
    if (ifMatch !== undefined) {
      const wanted = typeof ifMatch === 'string' ? [ifMatch] : ifMatch;
      if (etag === undefined || !wanted.some((e) => e === '*' || e === etag)) return false;
    }
    return !(ifNoneMatch && etag !== undefined);
  }

  /** The version id a choice names, and the model's version it is (undefined: NOT_FOUND is expected). */
  private version(key: string, choice: VersionChoice): { versionId: string; version?: ModelVersion } {
    switch (choice.kind) {
      case 'own': {
        const list = this.model.versionsOf(key);
        if (list.length === 0) return { versionId: this.bogusId };
        const version = list[list.length - 1 - (choice.index % list.length)]!;
        return { versionId: version.versionId, version };
      }
      case 'other-key': {
        const other = KEYS[choice.key]!;
        const list = this.model.versionsOf(other);
        if (other === key || list.length === 0) return this.version(key, { kind: 'own', index: choice.index });
        const versionId = list[choice.index % list.length]!.versionId;
        // An id both keys have (never, with these stores) would name this key's version.
        return { versionId, version: this.model.versionsOf(key).find((v) => v.versionId === versionId) };
      }
      case 'forgotten': {
        const ids = this.model.forgotten.get(key) ?? [];
        if (ids.length === 0) return this.version(key, { kind: 'own', index: choice.index });
        return { versionId: ids[choice.index % ids.length]! };
      }
      case 'bogus':
        return { versionId: this.bogusId };
    }
  }

  /** A mutation while cold is down: it fails (unavailable, or its own precondition or missing version) and changes nothing. */
  private async refusedWhileDown(op: Op, what: string): Promise<void> {
    const { provider } = this;
    const key = KEYS[(op as { key: number }).key]!;
    this.uncertain.add(key);
    let result: Outcome<unknown>;
    switch (op.op) {
      case 'write':
        result = await outcome(provider.write(key, CONTENTS[op.content]!, { ifMatch: this.ifMatch(op.ifMatch, key), ...(op.ifNoneMatch ? { ifNoneMatch: '*' as const } : {}) }));
        break;
      case 'createVersion':
        result = await outcome(provider.createVersion(key, CONTENTS[op.content]!, { message: MESSAGES[op.message]!, ifMatch: this.ifMatch(op.ifMatch, key) }));
        break;
      case 'restore':
        result = await outcome(provider.restoreVersion(key, this.version(key, op.version).versionId));
        break;
      case 'delete':
        result = await outcome(provider.delete(key, { allVersions: op.allVersions }));
        break;
      case 'deleteVersion':
        if (provider.deleteVersion === undefined) return;
        result = await outcome(provider.deleteVersion(key, this.version(key, op.version).versionId));
        break;
      case 'concurrent':
        for (const mutation of op.mutations) {
          if (mutation.kind === 'read') continue;
          const one = await outcome<unknown>(mutation.kind === "write" ? provider.write(key, CONTENTS[mutation.content]!) : provider.createVersion(key, CONTENTS[mutation.content]!, { message: "m" }));
          expect(one.ok ? 'succeeded' : one.code, `${what}: while cold is down`).toBe('PROVIDER_UNAVAILABLE');
        }
        return;
      default:
        return;
    }
    expect(result.ok ? 'succeeded' : result.code, `${what}: while cold is down`).toMatch(/^(PROVIDER_UNAVAILABLE|PRECONDITION_FAILED|NOT_FOUND)$/);
  }

  private expectInfo(info: ObjectInfo, key: string, expected: ModelObject, what: string): void {
    expect(
      { key: info.key, size: info.size, etag: info.etag, contentType: info.contentType, metadata: info.metadata },
      `${what}: object info`,
    ).toEqual({ key, size: expected.content.length, etag: sha256(expected.content), contentType: expected.contentType, metadata: expected.metadata });
    expect(typeof info.updatedAt === 'string' && !Number.isNaN(Date.parse(info.updatedAt)), `${what}: updatedAt ${info.updatedAt}`).toBe(true);
    expect(info.versionId, `${what}: versionId`).toBe(expected.versionId);
  }

  private expectVersionInfo(info: VersionInfo, key: string, expected: ModelVersion, what: string): void {
    expect({ versionId: info.versionId, key: info.key, size: info.size, etag: info.etag }, `${what}: version info`).toEqual({
      versionId: expected.versionId,
      key,
      size: expected.content.length,
      etag: sha256(expected.content),
    });
    if (expected.message === LEARN) expected.message = info.message;
    else expect(info.message, `${what}: message of ${info.versionId}`).toBe(expected.message);
    const author = normalizeAuthor(info.author);
    if (expected.author === LEARN) expected.author = author;
    else expect(author, `${what}: author of ${info.versionId}`).toEqual(expected.author);
  }

  async apply(op: Op, step: number): Promise<void> {
    currentOp = op.op;
    await this.applyOp(op, step);
  }

  /** Whether `op` changes the store: while cold is down such an operation must fail and change nothing. */
  private static mutates(op: Op): boolean {
    return ['write', 'createVersion', 'restore', 'delete', 'deleteVersion'].includes(op.op) || (op.op === 'concurrent' && op.mutations.some((m) => m.kind !== 'read'));
  }

  /**
   * A read while cold is down, of a key the ledger may hold as pending: 503 is allowed instead of the answer (any
   * answer for a key mutated concurrently, a NOT_FOUND for one a mutation was tried on during the outage).
   */
  private mayBePending(key: string, result: Outcome<unknown>, expectedNotFound = false): boolean {
    if (!this.down || result.ok || result.code !== 'PROVIDER_UNAVAILABLE') return false;
    return this.overlapped.has(key) || (expectedNotFound && this.uncertain.has(key));
  }

  /**
   * A version id backup has no copy of, asked for while cold is down: backup cannot tell a version cold has and it
   * lacks from no version at all, so 503 is its answer (README, hybrid: version ids stay cold's).
   */
  private unmappedWhileDown(versionId: string | undefined, result: Outcome<unknown>): boolean {
    return this.down && versionId !== undefined && !result.ok && result.code === 'PROVIDER_UNAVAILABLE';
  }

  private async applyOp(op: Op, step: number): Promise<void> {
    const { provider, model } = this;
    const what = `step ${step} ${JSON.stringify(op)}${this.down ? ' (cold down)' : ''}`;
    if (op.op === 'outage') {
      if (this.coldSwitch === undefined) return;
      this.coldSwitch(op.down);
      this.down = op.down;
      return;
    }
    if (this.down && Runner.mutates(op)) return this.refusedWhileDown(op, what);
    switch (op.op) {
      case 'write': {
        const key = KEYS[op.key]!;
        const content = Buffer.from(CONTENTS[op.content]!, 'utf8');
        const ifMatch = this.ifMatch(op.ifMatch, key);
        const holds = this.preconditionsHold(key, ifMatch, op.ifNoneMatch);
        const rawType = CONTENT_TYPES[op.contentType];
        const rawMetadata = METADATA[op.metadata];
        const { body, opts, fence } = this.guarded(content, op.extra);
        const result = await outcome(
          provider.write(key, body, { ...writeOptions(rawType, rawMetadata, ifMatch, op.ifNoneMatch), ...opts }),
        );
        if (this.expectRefusal(result, rawType, op.extra, holds, fence, what)) return;
        const info = expectSuccess(result, what);
        fence.expectPassedOnce(what);
        const object: ModelObject = { content, contentType: normalizeContentType(rawType), metadata: normalizeMetadata(rawMetadata) };
        if (this.everyWrite) {
          expect(typeof info.versionId, `${what}: an every-write store names the write's version`).toBe('string');
          object.versionId = info.versionId;
          model.addVersion(key, { versionId: info.versionId!, content, contentType: object.contentType, metadata: object.metadata, message: LEARN, author: LEARN });
        }
        this.expectInfo(info, key, object, what);
        model.objects.set(key, object);
        return;
      }
      case 'createVersion': {
        const key = KEYS[op.key]!;
        const content = Buffer.from(CONTENTS[op.content]!, 'utf8');
        const ifMatch = this.ifMatch(op.ifMatch, key);
        const holds = this.preconditionsHold(key, ifMatch, op.ifNoneMatch);
        const rawType = CONTENT_TYPES[op.contentType];
        const rawMetadata = METADATA[op.metadata];
        const author = AUTHORS[op.author];
        const message = MESSAGES[op.message]!;
        const { body, opts, fence } = this.guarded(content, op.extra);
        const result = await outcome(
          provider.createVersion(key, body, {
            message,
            ...(author !== undefined ? { author: { ...author } } : {}),
            ...writeOptions(rawType, rawMetadata, ifMatch, op.ifNoneMatch),
            ...opts,
          }),
        );
        if (this.expectRefusal(result, rawType, op.extra, holds, fence, what)) return;
        const info = expectSuccess(result, what);
        fence.expectPassedOnce(what);
        const version: ModelVersion = {
          versionId: info.versionId,
          content,
          contentType: normalizeContentType(rawType),
          metadata: normalizeMetadata(rawMetadata),
          message,
          author: normalizeAuthor(author) ?? this.defaultAuthor,
        };
        expect(model.versionsOf(key).some((v) => v.versionId === info.versionId), `${what}: a new version id`).toBe(false);
        this.expectVersionInfo(info, key, version, what);
        model.addVersion(key, version);
        model.objects.set(key, { content, contentType: version.contentType, metadata: version.metadata, versionId: info.versionId });
        return;
      }
      case 'restore': {
        const key = KEYS[op.key]!;
        const { versionId, version: source } = this.version(key, op.version);
        const message = op.message === undefined ? undefined : MESSAGES[op.message]!;
        const author = AUTHORS[op.author];
        const fence = new FenceProbe(op.fence);
        const result = await outcome(
          provider.restoreVersion(key, versionId, {
            ...(message !== undefined ? { message } : {}),
            ...(author !== undefined ? { author: { ...author } } : {}),
            ...fence.option(),
          }),
        );
        if (fence.refuses && !result.ok && result.error === fence.refusal) return;
        if (source === undefined) return expectFailure(result, 'NOT_FOUND', `${what} (version ${versionId})`);
        if (fence.refuses) expect.fail(`${what}: expected the fence's own refusal, got ${result.ok ? 'success' : result.code}`);
        const info = expectSuccess(result, what);
        fence.expectPassedOnce(what);
        const version: ModelVersion = {
          versionId: info.versionId,
          content: source.content,
          contentType: source.contentType,
          metadata: source.metadata,
          message: message ?? `restore ${versionId}`,
          author: normalizeAuthor(author) ?? this.defaultAuthor,
        };
        expect(info.versionId, `${what}: a restore is a new version`).not.toBe(versionId);
        expect(model.versionsOf(key).some((v) => v.versionId === info.versionId), `${what}: a new version id`).toBe(false);
        this.expectVersionInfo(info, key, version, what);
        model.addVersion(key, version);
        model.objects.set(key, { content: source.content, contentType: source.contentType, metadata: source.metadata, versionId: info.versionId });
        return;
      }
      case 'delete': {
        const key = KEYS[op.key]!;
        const fence = new FenceProbe(op.fence);
        const result = await outcome(provider.delete(key, { ...(op.allVersions ? { allVersions: true } : {}), ...fence.option() }));
        const nothing = !model.objects.has(key) && (!op.allVersions || model.versionsOf(key).length === 0);
        if (fence.refuses) {
          // Nothing changes; a delete with nothing to delete may succeed without asking its fence.
          if (!result.ok && result.error === fence.refusal) return;
          if (nothing && result.ok) return;
          expect.fail(`${what}: expected the fence's own refusal, got ${result.ok ? 'success' : `${result.code}: ${result.message}`}`);
        }
        expectSuccess(result, what);
        if (!nothing) fence.expectPassedOnce(what);
        model.objects.delete(key);
        if (op.allVersions) {
          const ids = model.versionsOf(key).map((v) => v.versionId);
          if (ids.length > 0) model.forgotten.set(key, [...(model.forgotten.get(key) ?? []), ...ids]);
          model.versions.delete(key);
        }
        return;
      }
      case 'read':
      case 'stat': {
        const key = KEYS[op.key]!;
        let expected: ModelObject | undefined;
        let versionId: string | undefined;
        if (op.version === undefined) expected = model.objects.get(key);
        else {
          const named = this.version(key, op.version);
          versionId = named.versionId;
          const v = named.version;
          expected = v && { content: v.content, contentType: v.contentType, metadata: v.metadata, versionId: v.versionId };
        }
        const label = `${what}${versionId ? ` (version ${versionId})` : ''}`;
        const opts = versionId === undefined ? undefined : { versionId };
        if (op.op === 'stat') {
          const result = await outcome(provider.stat(key, opts));
          if (this.mayBePending(key, result, expected === undefined)) return;
          if (expected === undefined && this.unmappedWhileDown(versionId, result)) return;
          if (expected === undefined) return expectFailure(result, 'NOT_FOUND', label);
          return this.expectInfo(expectSuccess(result, label), key, expected, label);
        }
        const result = await outcome(provider.read(key, opts).then(async ({ info, body }) => ({ info, bytes: await drain(body) })));
        if (this.mayBePending(key, result, expected === undefined)) return;
        if (expected === undefined && this.unmappedWhileDown(versionId, result)) return;
        if (expected === undefined) return expectFailure(result, 'NOT_FOUND', label);
        const { info, bytes } = expectSuccess(result, label);
        this.expectInfo(info, key, expected, label);
        expect(bytes.toString('hex'), `${label}: content`).toBe(expected.content.toString('hex'));
        return;
      }
      case 'range': {
        if (!provider.capabilities.rangeReads) return;
        const key = KEYS[op.key]!;
        const end = Math.max(op.start, op.end);
        const expected = model.objects.get(key);
        const result = await outcome(provider.read(key, { range: [op.start, end] }).then(async ({ info, body }) => ({ info, bytes: await drain(body) })));
        if (this.mayBePending(key, result, expected === undefined)) return;
        if (expected === undefined) return expectFailure(result, 'NOT_FOUND', what);
        if (op.start >= expected.content.length) return expectFailure(result, 'RANGE_NOT_SATISFIABLE', what);
        const { info, bytes } = expectSuccess(result, what);
        this.expectInfo(info, key, expected, what);
        expect(bytes.toString('hex'), `${what}: range content`).toBe(expected.content.subarray(op.start, end + 1).toString('hex'));
        return;
      }
      case 'list': {
        const prefix = PREFIXES[op.prefix]!;
        const expectedKeys = [...model.objects.keys()].filter((k) => k.startsWith(prefix)).sort(byteOrder);
        const seen: ObjectInfo[] = [];
        let cursor: string | undefined;
        for (let page = 0; ; page++) {
          // A listing of n keys by `limit` ends within ceil(n / limit) + 1 pages (the last one may be empty).
          expect(page, `${what}: too many pages (cursor ${cursor})`).toBeLessThanOrEqual(Math.ceil(expectedKeys.length / op.limit) + 1);
          const result = await outcome(provider.list({ prefix, limit: op.limit, ...(cursor ? { cursor } : {}) }));
          // A page that may cover a pending key answers 503 while cold is down (README "Backup repair").
          if (this.down && [...this.overlapped].some((k) => k.startsWith(prefix)) && !result.ok && result.code === 'PROVIDER_UNAVAILABLE') return;
          const listed = expectSuccess(result, `${what} page ${page}`);
          expect(listed.items.length, `${what}: page ${page} is over the limit`).toBeLessThanOrEqual(op.limit);
          seen.push(...listed.items);
          cursor = listed.cursor;
          if (cursor === undefined) break;
        }
        expect(seen.map((item) => item.key), `${what}: keys in UTF-8 byte order, each once`).toEqual(expectedKeys);
        for (const item of seen) this.expectInfo(item, item.key, model.objects.get(item.key)!, `${what}: item ${item.key}`);
        return;
      }
      case 'listVersions': {
        const key = KEYS[op.key]!;
        const expected = [...model.versionsOf(key)].reverse();
        const seen: VersionInfo[] = [];
        let cursor: string | undefined;
        for (let page = 0; ; page++) {
          expect(page, `${what}: too many pages`).toBeLessThanOrEqual(Math.ceil(expected.length / op.limit) + 1);
          const result = await outcome(provider.listVersions(key, { limit: op.limit, ...(cursor ? { cursor } : {}) }));
          if (this.mayBePending(key, result)) return;
          const listed = expectSuccess(result, `${what} page ${page}`);
          expect(listed.items.length, `${what}: page ${page} is over the limit`).toBeLessThanOrEqual(op.limit);
          seen.push(...listed.items);
          cursor = listed.cursor;
          if (cursor === undefined) break;
        }
        if (this.down && this.overlapped.has(key)) {
          // Backup may list the versions of a key mutated concurrently in the order their copies landed.
          expect([...seen.map((v) => v.versionId)].sort(), `${what}: each version once`).toEqual(expected.map((v) => v.versionId).sort());
          for (const info of seen) this.expectVersionInfo(info, key, expected.find((v) => v.versionId === info.versionId)!, `${what}: version ${info.versionId}`);
          return;
        }
        expect(seen.map((v) => v.versionId), `${what}: newest first, each once`).toEqual(expected.map((v) => v.versionId));
        seen.forEach((info, i) => this.expectVersionInfo(info, key, expected[i]!, `${what}: version ${i}`));
        return;
      }
      case 'listAcross': {
        const prefix = PREFIXES[op.prefix]!;
        const first = expectSuccess(await outcome(provider.list({ prefix, limit: op.limit })), `${what} first page`);
        const before = [...model.objects.keys()].filter((k) => k.startsWith(prefix)).sort(byteOrder);
        expect(first.items.map((item) => item.key), `${what}: first page`).toEqual(before.slice(0, op.limit));
        await this.applyOp(
          op.mutate.content === undefined
            ? { op: 'delete', key: op.mutate.key, allVersions: false }
            : { op: 'write', key: op.mutate.key, content: op.mutate.content, contentType: 0, metadata: 0, ifNoneMatch: false },
          step,
        );
        currentOp = op.op;
        if (first.cursor === undefined) {
          expect(before.length, `${what}: a first page without a cursor holds every key`).toBeLessThanOrEqual(op.limit);
          return;
        }
        // The cursor names the last key of the first page: what follows it now, as S3's StartAfter would list it.
        const last = first.items[first.items.length - 1]!.key;
        const expectedKeys = [...model.objects.keys()].filter((k) => k.startsWith(prefix) && byteOrder(k, last) > 0).sort(byteOrder);
        const seen: ObjectInfo[] = [];
        let cursor: string | undefined = first.cursor;
        for (let page = 1; cursor !== undefined; page++) {
          expect(page, `${what}: too many pages`).toBeLessThanOrEqual(Math.ceil(expectedKeys.length / op.limit) + 1);
          const listed: Page<ObjectInfo> = expectSuccess(await outcome(provider.list({ prefix, limit: op.limit, cursor })), `${what} page ${page}`);
          expect(listed.items.length, `${what}: page ${page} is over the limit`).toBeLessThanOrEqual(op.limit);
          seen.push(...listed.items);
          cursor = listed.cursor;
        }
        expect(seen.map((item) => item.key), `${what}: the keys after ${last}`).toEqual(expectedKeys);
        for (const item of seen) this.expectInfo(item, item.key, model.objects.get(item.key)!, `${what}: item ${item.key}`);
        return;
      }
      case 'versionsAcross': {
        const key = KEYS[op.key]!;
        if (op.mutate.kind === 'deleteVersion' && provider.deleteVersion === undefined) return;
        const before = [...model.versionsOf(key)].reverse();
        const first = expectSuccess(await outcome(provider.listVersions(key, { limit: op.limit })), `${what} first page`);
        expect(first.items.map((v) => v.versionId), `${what}: first page`).toEqual(before.slice(0, op.limit).map((v) => v.versionId));
        if (op.mutate.kind === 'version') {
          await this.applyOp({ op: 'createVersion', key: op.key, content: op.mutate.content, contentType: 0, metadata: 0, message: 0, author: 0, ifNoneMatch: false }, step);
        } else {
          // An older version than the first page's last, never the newest (retention's rule on every-write stores).
          const older = before.slice(op.limit);
          if (older.length > 0) {
            const victim = older[op.mutate.index % older.length]!;
            await this.applyOp({ op: 'deleteVersion', key: op.key, version: { kind: 'own', index: before.indexOf(victim) } }, step);
          }
        }
        currentOp = op.op;
        if (first.cursor === undefined) {
          expect(before.length, `${what}: a first page without a cursor holds every version`).toBeLessThanOrEqual(op.limit);
          return;
        }
        // What follows the first page's last version: the versions older than it that the key still has.
        const last = first.items[first.items.length - 1]!.versionId;
        const now = [...model.versionsOf(key)].reverse();
        const expected = now.slice(now.findIndex((v) => v.versionId === last) + 1);
        const seen: VersionInfo[] = [];
        let cursor: string | undefined = first.cursor;
        for (let page = 1; cursor !== undefined; page++) {
          expect(page, `${what}: too many pages`).toBeLessThanOrEqual(Math.ceil(expected.length / op.limit) + 1);
          const listed: Page<VersionInfo> = expectSuccess(await outcome(provider.listVersions(key, { limit: op.limit, cursor })), `${what} page ${page}`);
          expect(listed.items.length, `${what}: page ${page} is over the limit`).toBeLessThanOrEqual(op.limit);
          seen.push(...listed.items);
          cursor = listed.cursor;
        }
        expect(seen.map((v) => v.versionId), `${what}: the versions older than ${last}`).toEqual(expected.map((v) => v.versionId));
        return;
      }
      case 'deleteVersion': {
        if (provider.deleteVersion === undefined) return;
        const key = KEYS[op.key]!;
        const { versionId, version } = this.version(key, op.version);
        const list = model.versionsOf(key);
        // Callers never delete the newest version of an every-write store: it is the current object.
        if (this.everyWrite && version !== undefined && list[list.length - 1] === version) return;
        expectSuccess(await outcome(provider.deleteVersion(key, versionId)), `${what} (version ${versionId})`);
        // Idempotent, and the current object stays as it is even when it was made from that version.
        if (version !== undefined) model.versions.set(key, list.filter((v) => v !== version));
        if (model.versionsOf(key).length === 0) model.versions.delete(key);
        return;
      }
      case 'reread': {
        for (let i = 0; i < op.times; i++) await this.applyOp({ op: 'read', key: op.key }, step);
        currentOp = op.op;
        return;
      }
      case 'concurrent': {
        const key = KEYS[op.key]!;
        // A read among them sees a whole object: the one before, or one of theirs, its bytes those its info describes.
        const possible = new Set([...op.mutations.map((m) => sha256(CONTENTS[m.content]!)), ...(model.objects.has(key) ? [sha256(model.objects.get(key)!.content)] : [])]);
        const reads = op.mutations.flatMap((mutation, i) =>
          mutation.kind !== 'read'
            ? []
            : [
                outcome(provider.read(key).then(async ({ info, body }) => ({ info, bytes: await drain(body) }))).then((result) => {
                  if (!result.ok) return expectFailure(result, 'NOT_FOUND', `${what}: read ${i}`);
                  if (!this.readsMayTear) expect(sha256(result.value.bytes), `${what}: read ${i} bytes`).toBe(result.value.info.etag);
                  expect(possible.has(result.value.info.etag), `${what}: read ${i} saw ${result.value.info.etag}`).toBe(true);
                }),
              ],
        );
        const writes = op.mutations.filter((m) => m.kind !== 'read');
        if (writes.length > 1) this.overlapped.add(key);
        const started = writes.map((mutation, i) => {
          const content = Buffer.from(CONTENTS[mutation.content]!, 'utf8');
          return mutation.kind === 'write'
            ? outcome(provider.write(key, content)).then((result) => ({ mutation, content, result }))
            : outcome(provider.createVersion(key, content, { message: `concurrent ${i}` })).then((result) => ({ mutation, content, result }));
        });
        const settled = await Promise.all(started);
        await Promise.all(reads);
        if (writes.length === 0) return;
        const made: ModelVersion[] = [];
        const candidates: ModelObject[] = [];
        for (const [i, { mutation, content, result }] of settled.entries()) {
          const info = expectSuccess(result as Outcome<ObjectInfo | VersionInfo>, `${what}: mutation ${i}`);
          expect(info.etag, `${what}: mutation ${i} etag`).toBe(sha256(content));
          const versionId = mutation.kind === 'version' || this.everyWrite ? info.versionId : undefined;
          if (versionId !== undefined) {
            made.push({
              versionId,
              content,
              contentType: 'application/octet-stream',
              metadata: {},
              message: mutation.kind === 'version' ? `concurrent ${i}` : LEARN,
              author: mutation.kind === 'version' ? this.defaultAuthor : LEARN,
            });
          }
          candidates.push({ content, contentType: 'application/octet-stream', metadata: {}, ...(versionId ? { versionId } : {}) });
        }
        // The versions are the earlier ones plus every one made here, in the order the store gives them (newest first).
        const listed = (await allVersions(provider, key)).map((v) => v.versionId);
        const earlier = model.versionsOf(key).map((v) => v.versionId);
        const fresh = listed.filter((id) => !earlier.includes(id));
        expect(new Set(fresh), `${what}: the new versions`).toEqual(new Set(made.map((v) => v.versionId)));
        expect(listed.slice(fresh.length), `${what}: the earlier versions stay, older than the new ones`).toEqual([...earlier].reverse());
        model.versions.set(key, [...model.versionsOf(key), ...[...fresh].reverse().map((id) => made.find((v) => v.versionId === id)!)]);
        // The current object is one of them; when all of them are versions it is the newest (a version made current
        // after a newer one would be an older version shown as current).
        const stat = expectSuccess(await outcome(provider.stat(key)), `${what}: stat`);
        const current = candidates.find((c) => c.versionId === stat.versionId && sha256(c.content) === stat.etag);
        expect(current, `${what}: the current object (${stat.etag}, ${stat.versionId}) is one of the mutations`).toBeDefined();
        if (this.everyWrite || writes.every((m) => m.kind === 'version')) {
          expect(stat.versionId, `${what}: the current object is the newest version`).toBe(fresh[0]);
        }
        model.objects.set(key, current!);
        return;
      }
      case 'stats': {
        const stats = expectSuccess(await outcome(provider.stats()), what);
        let bytes = 0;
        for (const object of model.objects.values()) bytes += object.content.length;
        let versions = 0;
        for (const list of model.versions.values()) versions += list.length;
        expect({ kind: stats.kind, objects: stats.objects, bytes: stats.bytes, versions: stats.versions }, `${what}: stats`).toEqual({
          kind: provider.kind,
          objects: model.objects.size,
          bytes,
          versions,
        });
        return;
      }
    }
  }
}

// ---- one property per provider ------------------------------------------------------------------------------------

/**
 * The contract suite's hybrid (ram hot, s3 cold, disk backup, reads served hot after two), under a Redis prefix of
 * this file, with a cold tier that can be switched off: then every call to it fails with PROVIDER_UNAVAILABLE, as an
 * open circuit does.
 */
interface ModelFixture {
  name: string;
  create(): Promise<{ provider: StorageProvider; dispose(): Promise<void>; coldSwitch?: (down: boolean) => void }>;
}

const hybridFixture: ModelFixture = {
  name: 'hybrid',
  async create() {
    const endpoint = await sharedS3();
    const prefix = uniquePrefix('model-hybrid');
    const bucket = await endpoint.createBucket();
    const backupDir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-model-backup-'));
    const redis = await connectRedis('worker');
    const s3 = await createS3Provider(s3ProviderOptions(endpoint, bucket));
    let down = false;
    const cold = new Proxy(s3, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown;
        if (typeof value !== 'function') return value;
        if (property === 'close' || property === 'constructor') return value.bind(target);
        return (...args: unknown[]) =>
          down ? Promise.reject(new ProviderUnavailableError('cold tier switched off by the test')) : (value as (...a: unknown[]) => unknown).apply(target, args);
      },
    });
    const hotMaxBytes = 64 * 1024 * 1024;
    const provider = await createHybridProvider({
      name: 'model-hybrid',
      accessThreshold: 2,
      hotTtlSeconds: 3600,
      hotMaxBytes,
      hot: new RamProvider({ maxBytes: hotMaxBytes + 1024 * 1024 }),
      cold,
      backup: new DiskProvider({ root: backupDir, fsync: false }),
      redis,
      keyPrefix: prefix,
    });
    return {
      provider,
      coldSwitch: (value: boolean) => {
        down = value;
      },
      async dispose() {
        down = false;
        await provider.close();
        await deleteKeys(redis, prefix).catch(() => undefined);
        await closeRedis(redis);
        await rm(backupDir, { recursive: true, force: true });
        await endpoint.removeBucket(bucket).catch(() => undefined);
      },
    };
  },
};

const providers: ModelFixture[] = fixtures.map((fixture) => (fixture.name === 'hybrid' ? hybridFixture : fixture));
/**
 * Fixtures whose S3 server is s3rver (the plain `s3` one and hybrid's cold tier, unless S3_TEST_ENDPOINT names a real
 * one): its reads racing a write may pair one write's bytes with another's metadata (seed 2 finds one).
 */
const TEARING_S3 = new Set((await sharedS3()).kind === 's3rver' ? ['s3', 'hybrid'] : []);

/** Runs per provider: the remote ones (a bucket, a repository, Redis) cost more per run. */
const RUNS: Record<string, number> = { ram: 60, disk: 50, git: 40, s3: 30, hybrid: 30 };

/**
 * Sequences run first on every provider, before the generated ones: the shrunk counterexamples of divergences this
 * test found, kept so that they are checked whatever the seed finds.
 */
const EXAMPLES: Op[][] = [
  // A range of an empty object is unsatisfiable (416), not an outage.
  [
    { op: 'write', key: 0, content: 0, contentType: 0, metadata: 0, ifNoneMatch: false },
    { op: 'range', key: 0, start: 0, end: 0 },
  ],
  // Retention removes the version the current object was made from: the object stays as it was, its versionId too,
  // on hybrid also as backup describes it while cold is down (the final comparison).
  [
    { op: 'createVersion', key: 1, content: 1, contentType: 0, metadata: 0, message: 0, author: 0, ifNoneMatch: false },
    { op: 'deleteVersion', key: 1, version: { kind: 'own', index: 0 } },
    { op: 'stat', key: 1 },
  ],
];

describe.each(providers)('model-based contract: $name', (fixture) => {
  it('agrees with the model over random operation sequences', { timeout: 600_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 40, size: 'max' }), async (ops) => {
        const { provider, dispose, coldSwitch } = await fixture.create();
        const switchable = coldSwitch !== undefined;
        try {
          const runner = new Runner(provider, coldSwitch, TEARING_S3.has(fixture.name));
          for (const [step, op] of ops.entries()) await runner.apply(op, step);
          // Every sequence ends with a full comparison of what the store holds, and on hybrid a second one from its
          // backup tier alone (cold down): backup mirrors cold.
          for (const down of switchable ? [false, true] : [false]) {
            await runner.apply({ op: 'outage', down }, ops.length);
            await runner.apply({ op: 'list', prefix: 0, limit: 3 }, ops.length);
            for (let k = 0; k < KEYS.length; k++) {
              await runner.apply({ op: 'listVersions', key: k, limit: 2 }, ops.length);
              await runner.apply({ op: 'stat', key: k }, ops.length);
            }
            await runner.apply({ op: 'stats' }, ops.length);
          }
        } finally {
          await provider.close();
          await dispose();
        }
      }),
      { seed: SEED, numRuns: Number(process.env.MODEL_RUNS ?? RUNS[fixture.name] ?? 30), examples: EXAMPLES.map((ops) => [ops]) },
    );
    if (process.env.MODEL_COVERAGE) console.log(fixture.name, Object.fromEntries([...coverage].sort()));
    coverage.clear();
  });
});
