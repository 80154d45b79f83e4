/**
 * In-process provider. Content lives in Buffers inside this process, within a byte budget (`RAM_MAX_BYTES`):
 * the current objects and every version count against it, so a write over budget fails with `StorageFullError`
 * and changes nothing. Each counts with all it holds, not only its content (`storedBytes`). As a store it serves the
 * embedded process; in split deployments it is hybrid's hot tier.
 * `exportSnapshot` / `importSnapshot` carry the whole store across restarts.
 */
import { Readable } from 'node:stream';
import { nowIso } from '../clock.js';
import { readAll, requireExpectedEtag, resolveRange, sha256Hex } from './body.js';
import { decodeCursor, decodeVersionsCursor, encodeCursor, encodeVersionsCursor, pageLimit } from './cursor.js';
import { NotFoundError, PayloadTooLargeError, StorageFullError } from './errors.js';
import { passFence } from './fence.js';
import { requirePreconditions, type Preconditions } from './if-match.js';
import { compareKeys, validateKey, validatePrefix } from './keys.js';
import { describeWrite, metadataBytes } from './metadata.js';
import { readSnapshot, snapshotMayRepeat, writeSnapshot, type SnapshotEntry } from './ram-snapshot.js';
import { lowerBoundKey, SortedKeys } from './sorted-keys.js';
import type {
  Author,
  Body,
  Capabilities,
  DeleteOptions,
  HealthReport,
  ListOptions,
  ObjectInfo,
  Page,
  ProviderStats,
  ReadOptions,
  RestoreOptions,
  StorageProvider,
  VersionInfo,
  VersionOptions,
  WriteOptions,
} from './types.js';
import { mintAfter, newVersionId } from './version-id.js';

interface StoredObject {
  info: ObjectInfo;
  content: Buffer;
}

interface StoredVersion {
  info: VersionInfo;
  contentType: string;
  metadata: Record<string, string>;
  content: Buffer;
}

/**
 * Stored infos are handed out as they are, not copied: frozen (their metadata and author too) when stored, a caller
 * cannot change the store through one. Every object frozen here is the store's own, never a caller's.
 */
function frozen<T extends { metadata?: Record<string, string>; author?: Author }>(info: T): T {
  if (info.metadata) Object.freeze(info.metadata);
  if (info.author) Object.freeze(info.author);
  return Object.freeze(info);
}

/**
 * `content` in memory of its own. A small Buffer is often a slice of Node's shared 8 KiB pool: stored as it is, it
 * would keep the whole pool chunk alive, and its `.buffer` would show whatever else lives there.
 */
function ownMemory(content: Buffer): Buffer {
  if (content.byteOffset === 0 && content.byteLength === content.buffer.byteLength) return content;
  const own = Buffer.allocUnsafeSlow(content.length);
  content.copy(own);
  return own;
}

/**
 * What one current object or version costs beyond the text it holds: its etag, version id, dates, and the Map, array
 * and object slots that hold it, rounded up. Without it (and without counting keys, metadata, messages), empty
 * versions with long keys and messages grew the heap by 100 MiB while the budget counted 0 bytes.
 */
export const ENTRY_OVERHEAD_BYTES = 256;

/** What a current object (`message` unset) or a version costs against the budget, besides its content. */
function describedBytes(entry: { key: string; contentType: string; metadata: Record<string, string>; message?: string; author?: Author }): number {
  const text = (value: string | undefined) => (value === undefined ? 0 : Buffer.byteLength(value));
  return (
    ENTRY_OVERHEAD_BYTES +
    text(entry.key) +
    text(entry.contentType) +
    metadataBytes(entry.metadata) +
    text(entry.message) +
    text(entry.author?.name) +
    text(entry.author?.email)
  );
}

/**
 * What writing `bytes` of content to `key` (`described` by `describeWrite`) counts against a ram store's budget: the
 * hybrid's hot tier charges its copies the same, so that its `HOT_MAX_BYTES` and its ram store's budget agree.
 */
export function ramWriteBytes(key: string, bytes: number, described: { contentType: string; metadata: Record<string, string> }): number {
  return describedBytes({ key, ...described }) + bytes;
}

/** What a stored object or version (or its snapshot entry) counts against the budget. */
function storedBytes(entry: StoredObject | StoredVersion): number {
  const { content } = entry;
  if (!('contentType' in entry)) return describedBytes(entry.info) + content.length;
  return describedBytes({ ...entry, key: entry.info.key, message: entry.info.message, author: entry.info.author }) + content.length;
}

/** What the last copies of a format-1 snapshot's entries take (the store's own count), keeping no content. */
async function legacySnapshotBytes(path: string): Promise<number> {
  const bytes = new Map<string, number>();
  for await (const entry of readSnapshot(path)) {
    bytes.set(JSON.stringify([entry.type, entry.info.key, entry.type === 'version' ? entry.info.versionId : '']), storedBytes(entry));
  }
  let total = 0;
  for (const count of bytes.values()) total += count;
  return total;
}

/** Where `versionId` is in a key's versions (oldest first), or where it would be inserted. */
function versionIndex(list: StoredVersion[], versionId: string): number {
  return lowerBoundKey(list.length, (i) => list[i]!.info.versionId, versionId);
}

export interface RamProviderOptions {
  maxBytes: number;
}

export class RamProvider implements StorageProvider {
  readonly kind = 'ram' as const;
  readonly capabilities: Capabilities = {
    versioning: 'explicit',
    presign: 'signed-url',
    diff: false,
    branches: false,
    rangeReads: true,
  };

  private readonly objects = new Map<string, StoredObject>();
  /**
   * In versionId order, which is oldest first: `listVersions` walks it backwards from where it starts, and a version
   * is found by binary search.
   */
  private readonly versions = new Map<string, StoredVersion[]>();
  /** Current keys in `compareKeys` order, so a list page costs a binary search, not a sort of the whole store. */
  private readonly sortedKeys = new SortedKeys();
  private usedBytes = 0;
  private hits = 0;
  private misses = 0;
  private readonly maxBytes: number;

  constructor(options: RamProviderOptions) {
    this.maxBytes = options.maxBytes;
  }

  async write(key: string, body: Body, opts?: WriteOptions): Promise<ObjectInfo> {
    validateKey(key);
    const described = describeWrite(opts);
    const content = await this.readBody(body);
    const etag = sha256Hex(content);
    requireExpectedEtag(key, opts?.expectedEtag, etag);
    await passFence(opts); // before the check: the check and the commit are one synchronous step
    this.checkPrecondition(key, opts);
    this.reserve(ramWriteBytes(key, content.length, described) - this.currentBytes(key));
    return this.setCurrent(key, content, etag, described.contentType, described.metadata);
  }

  async read(key: string, opts?: ReadOptions): Promise<{ info: ObjectInfo; body: Readable }> {
    const { info, content } = this.find(key, opts?.versionId);
    if (!opts?.range) return { info, body: Readable.from([content]) };
    const [start, end] = resolveRange(opts.range, content.length);
    return { info, body: Readable.from([content.subarray(start, end + 1)]) };
  }

  async stat(key: string, opts?: { versionId?: string }): Promise<ObjectInfo> {
    return this.find(key, opts?.versionId).info;
  }

  async delete(key: string, opts?: DeleteOptions): Promise<void> {
    validateKey(key);
    await passFence(opts);
    const current = this.objects.get(key);
    if (current) {
      this.objects.delete(key);
      this.usedBytes -= storedBytes(current);
      this.sortedKeys.delete(key);
    }
    if (opts?.allVersions) {
      for (const version of this.versions.get(key) ?? []) this.usedBytes -= storedBytes(version);
      this.versions.delete(key);
    }
  }

  async list(opts?: ListOptions): Promise<Page<ObjectInfo>> {
    const prefix = validatePrefix(opts?.prefix);
    const limit = pageLimit(opts?.limit);
    const after = decodeCursor(opts?.cursor);
    const keys = after !== undefined && compareKeys(after, prefix) >= 0 ? this.sortedKeys.from(after, true) : this.sortedKeys.from(prefix);
    const items: ObjectInfo[] = [];
    // Keys from `prefix` on that do not start with it sort after every key that does.
    for (const key of keys) {
      if (!key.startsWith(prefix)) break;
      if (items.length === limit) return { items, cursor: encodeCursor(items[items.length - 1]!.key) };
      items.push(this.objects.get(key)!.info);
    }
    return { items };
  }

  async createVersion(key: string, body: Body, opts: VersionOptions): Promise<VersionInfo> {
    validateKey(key);
    const described = describeWrite(opts);
    const content = await this.readBody(body);
    const etag = sha256Hex(content);
    requireExpectedEtag(key, opts.expectedEtag, etag);
    await passFence(opts);
    this.checkPrecondition(key, opts);
    this.reserve(this.versionBytes(key, content, described.contentType, described.metadata, opts.message, opts.author));
    return this.recordVersion(key, content, etag, described.contentType, described.metadata, opts.message, opts.author);
  }

  async listVersions(key: string, opts?: { cursor?: string; limit?: number }): Promise<Page<VersionInfo>> {
    validateKey(key);
    const limit = pageLimit(opts?.limit);
    const after = decodeVersionsCursor(key, opts?.cursor);
    const list = this.versions.get(key) ?? [];
    // Newest first: down from the last version, or from the one just older than the cursor.
    const start = (after === undefined ? list.length : versionIndex(list, after)) - 1;
    const items: VersionInfo[] = [];
    for (let at = start; at >= 0 && items.length < limit; at--) items.push(list[at]!.info);
    return start - limit >= 0 ? { items, cursor: encodeVersionsCursor(key, items[items.length - 1]!.versionId) } : { items };
  }

  async restoreVersion(key: string, versionId: string, opts?: RestoreOptions): Promise<VersionInfo> {
    await passFence(opts);
    const version = this.findVersion(key, versionId);
    const message = opts?.message ?? `restore ${versionId}`;
    this.reserve(this.versionBytes(key, version.content, version.contentType, version.metadata, message, opts?.author));
    return this.recordVersion(key, version.content, version.info.etag, version.contentType, version.metadata, message, opts?.author);
  }

  async deleteVersion(key: string, versionId: string): Promise<void> {
    validateKey(key);
    const list = this.versions.get(key);
    const at = list === undefined ? -1 : versionIndex(list, versionId);
    if (list === undefined || list[at]?.info.versionId !== versionId) return;
    const [removed] = list.splice(at, 1);
    this.usedBytes -= storedBytes(removed!);
    if (list.length === 0) this.versions.delete(key);
  }

  async stats(): Promise<ProviderStats> {
    let bytes = 0;
    for (const object of this.objects.values()) bytes += object.content.length;
    let versions = 0;
    for (const list of this.versions.values()) versions += list.length;
    return {
      kind: this.kind,
      objects: this.objects.size,
      bytes,
      versions,
      detail: { hits: this.hits, misses: this.misses, usedBytes: this.usedBytes, maxBytes: this.maxBytes },
    };
  }

  async health(): Promise<HealthReport> {
    const full = this.usedBytes >= this.maxBytes;
    return {
      status: full ? 'degraded' : 'ok',
      detail: `${this.usedBytes} of ${this.maxBytes} bytes used${full ? ': budget exhausted' : ''}`,
      latencyMs: 0,
    };
  }

  async close(): Promise<void> {}

  /**
   * Writes every object, its metadata and its versions to `path` (atomically: a crash keeps the old snapshot), as
   * they are when it is called: mutations while the file is written do not tear it.
   */
  async exportSnapshot(path: string): Promise<void> {
    // References are enough to freeze the state: stored entries and their contents are replaced, never changed.
    const objects = [...this.objects.values()];
    const versions = [...this.versions.values()].map((list) => [...list]);
    const entries = (function* () {
      for (const { info, content } of objects) yield { type: 'object', info, content } satisfies SnapshotEntry;
      for (const list of versions) {
        for (const { info, contentType, metadata, content } of list) {
          yield { type: 'version', info, contentType, metadata, content } satisfies SnapshotEntry;
        }
      }
    })();
    await writeSnapshot(path, entries);
  }

  /** Replaces this store's content with the snapshot at `path`; checks every etag and the byte budget first. */
  async importSnapshot(path: string): Promise<void> {
    const objects = new Map<string, StoredObject>();
    const versions = new Map<string, Map<string, StoredVersion>>();
    let used = 0;
    const tooLarge = () => new StorageFullError(`snapshot ${path} needs more than RAM_MAX_BYTES=${this.maxBytes}`);
    // An object or version listed twice (format 1) counts once, its last copy: such a file is measured in a first pass
    // that keeps no content, so that it is held to the budget without reading it whole into memory first; a current
    // one is held to it as it is read.
    const repeats = await snapshotMayRepeat(path);
    if (repeats && (await legacySnapshotBytes(path)) > this.maxBytes) throw tooLarge();
    for await (const entry of readSnapshot(path)) {
      const twin = entry.type === 'object' ? objects.get(entry.info.key) : versions.get(entry.info.key)?.get(entry.info.versionId);
      used += storedBytes(entry) - (twin === undefined ? 0 : storedBytes(twin));
      if (!repeats && used > this.maxBytes) throw tooLarge();
      const content = ownMemory(entry.content);
      if (entry.type === 'object') objects.set(entry.info.key, { info: frozen(entry.info), content });
      else {
        const { info, contentType, metadata } = entry;
        const list = versions.get(info.key) ?? new Map<string, StoredVersion>();
        list.set(info.versionId, { info: frozen(info), contentType, metadata: Object.freeze(metadata), content });
        versions.set(info.key, list);
      }
    }
    // The first pass measured the file as it was then; what was read is held to the budget too.
    if (used > this.maxBytes) throw tooLarge();
    // Ids minted here from now on sort after the imported ones (those of a host whose clock runs ahead too).
    for (const list of versions.values()) for (const versionId of list.keys()) mintAfter(versionId);
    this.objects.clear();
    this.versions.clear();
    for (const [key, object] of objects) this.objects.set(key, object);
    for (const [key, list] of versions) this.versions.set(key, [...list.values()].sort((a, b) => compareKeys(a.info.versionId, b.info.versionId)));
    this.sortedKeys.reset([...objects.keys()].sort(compareKeys));
    this.usedBytes = used;
  }

  private async readBody(body: Body): Promise<Buffer> {
    try {
      return ownMemory(await readAll(body, this.maxBytes));
    } catch (error) {
      if (error instanceof PayloadTooLargeError) {
        throw new PayloadTooLargeError(`body is larger than this ram store's whole budget (RAM_MAX_BYTES=${this.maxBytes})`);
      }
      throw error;
    }
  }

  private reserve(extraBytes: number): void {
    if (this.usedBytes + extraBytes > this.maxBytes) {
      throw new StorageFullError(
        `ram store is full: ${this.usedBytes} of ${this.maxBytes} bytes used, this write needs ${extraBytes} more (RAM_MAX_BYTES)`,
      );
    }
  }

  /** What the current object of `key` counts, freed when a write replaces it. */
  private currentBytes(key: string): number {
    const current = this.objects.get(key);
    return current === undefined ? 0 : storedBytes(current);
  }

  /** What a new version of `key` adds: the version, and its content again as the new current object. */
  private versionBytes(key: string, content: Buffer, contentType: string, metadata: Record<string, string>, message: string, author: Author | undefined): number {
    const current = describedBytes({ key, contentType, metadata }) + content.length;
    return current + describedBytes({ key, contentType, metadata, message, author }) + content.length - this.currentBytes(key);
  }

  private checkPrecondition(key: string, opts: Preconditions | undefined): void {
    requirePreconditions(key, opts, this.objects.get(key)?.info.etag);
  }

  private setCurrent(
    key: string,
    content: Buffer,
    etag: string,
    contentType: string,
    metadata: Record<string, string>,
    versionId?: string,
    updatedAt = nowIso(),
  ): ObjectInfo {
    const info = frozen<ObjectInfo>({ key, size: content.length, etag, contentType, metadata, updatedAt, ...(versionId ? { versionId } : {}) });
    const previous = this.objects.get(key);
    if (previous) this.usedBytes -= storedBytes(previous);
    else this.sortedKeys.add(key);
    const stored = { info, content };
    this.objects.set(key, stored);
    this.usedBytes += storedBytes(stored);
    return info;
  }

  private recordVersion(
    key: string,
    content: Buffer,
    etag: string,
    contentType: string,
    metadata: Record<string, string>,
    message: string,
    author: VersionOptions['author'],
  ): VersionInfo {
    const createdAt = nowIso();
    // The author is the caller's object: the version keeps a copy.
    const info = frozen<VersionInfo>({
      versionId: newVersionId(),
      key,
      size: content.length,
      etag,
      createdAt,
      message,
      ...(author ? { author: { ...author } } : {}),
    });
    const list = this.versions.get(key) ?? [];
    // At its place by id, not pushed: ids minted after importing another process's snapshot may sort before its.
    const stored = { info, contentType, metadata, content };
    list.splice(versionIndex(list, info.versionId), 0, stored);
    this.versions.set(key, list);
    this.usedBytes += storedBytes(stored);
    this.setCurrent(key, content, etag, contentType, metadata, info.versionId, createdAt);
    return info;
  }

  private find(key: string, versionId: string | undefined): { info: ObjectInfo; content: Buffer } {
    validateKey(key);
    if (versionId !== undefined) {
      const version = this.findVersion(key, versionId);
      return {
        info: {
          key,
          size: version.info.size,
          etag: version.info.etag,
          contentType: version.contentType,
          metadata: version.metadata,
          updatedAt: version.info.createdAt,
          versionId,
        },
        content: version.content,
      };
    }
    const object = this.objects.get(key);
    if (!object) {
      this.misses++;
      throw new NotFoundError(`no object "${key}"`);
    }
    this.hits++;
    return object;
  }

  private findVersion(key: string, versionId: string): StoredVersion {
    validateKey(key);
    const list = this.versions.get(key) ?? [];
    const version = list[versionIndex(list, versionId)];
    if (version?.info.versionId !== versionId) {
      this.misses++;
      throw new NotFoundError(`no version "${versionId}" of "${key}"`);
    }
    this.hits++;
    return version;
  }
}
