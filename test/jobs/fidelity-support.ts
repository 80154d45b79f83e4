/**
 * Shared pieces of the cross-kind fidelity review: stores of every kind, a data set of awkward keys, types,
 * metadata and histories, and a snapshot of what a store holds, to compare a source with a target.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readAll, sha256Hex } from '../../src/providers/body.js';
import { DiskProvider } from '../../src/providers/disk.js';
import { GitProvider } from '../../src/providers/git.js';
import { createHybridProvider } from '../../src/providers/hybrid.js';
import { RamProvider } from '../../src/providers/ram.js';
import { createS3Provider } from '../../src/providers/s3.js';
import type { Author, StorageProvider } from '../../src/providers/types.js';
import { closeRedis } from '../../src/redis.js';
import { connectRedis, deleteKeys, uniquePrefix } from '../support/redis.js';
import { s3ProviderOptions, sharedS3, sharedVersionedS3 } from '../support/s3.js';
import { allObjects } from './fixtures/maintenance.js';

export type Kind = 'ram' | 'disk' | 'git' | 's3' | 's3v' | 'hybrid';

export class Stores {
  private readonly disposers: (() => Promise<void>)[] = [];

  async tempDir(label: string): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), `kyozo-fidelity-${label}-`));
    this.disposers.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  /** undefined: s3v asked for and no versioned endpoint. */
  async open(kind: Kind): Promise<StorageProvider | undefined> {
    switch (kind) {
      case 'ram':
        return new RamProvider({ maxBytes: 64 * 1024 * 1024 });
      case 'disk':
        return new DiskProvider({ root: await this.tempDir('disk'), fsync: false });
      case 'git': {
        const git = await GitProvider.open({ repoPath: await this.tempDir('git') });
        this.disposers.push(() => git.close());
        return git;
      }
      case 's3': {
        const endpoint = await sharedS3();
        const bucket = await endpoint.createBucket();
        const s3 = await createS3Provider(s3ProviderOptions(endpoint, bucket, { versioning: 'explicit' }));
        this.disposers.push(async () => {
          await s3.close();
          await endpoint.removeBucket(bucket).catch(() => undefined);
        });
        return s3;
      }
      case 's3v': {
        const { endpoint, reason } = await sharedVersionedS3();
        if (endpoint === undefined) {
          console.log(`fidelity with s3 native versioning not covered: ${reason}`);
          return undefined;
        }
        const bucket = await endpoint.createBucket({ versioning: true });
        const s3 = await createS3Provider(s3ProviderOptions(endpoint, bucket, { versioning: 'native' }));
        this.disposers.push(async () => {
          await s3.close();
          await endpoint.removeBucket(bucket).catch(() => undefined);
        });
        return s3;
      }
      case 'hybrid': {
        const endpoint = await sharedS3();
        const bucket = await endpoint.createBucket();
        const redis = await connectRedis('worker');
        const prefix = uniquePrefix('fidelity-hybrid');
        const hybrid = await createHybridProvider({
          name: 'fidelity',
          hot: new RamProvider({ maxBytes: 64 * 1024 * 1024 }),
          cold: await createS3Provider(s3ProviderOptions(endpoint, bucket, { versioning: 'explicit' })),
          backup: new DiskProvider({ root: await this.tempDir('hybrid-backup'), fsync: false }),
          redis,
          keyPrefix: prefix,
          accessThreshold: 5,
          hotTtlSeconds: 3600,
          hotMaxBytes: 32 * 1024 * 1024,
        });
        this.disposers.push(async () => {
          await hybrid.close();
          await deleteKeys(redis, prefix).catch(() => undefined);
          await closeRedis(redis);
          await endpoint.removeBucket(bucket).catch(() => undefined);
        });
        return hybrid;
      }
    }
  }

  async close(): Promise<void> {
    for (const dispose of this.disposers.splice(0).reverse()) await dispose().catch(() => undefined);
  }
}

/** A key of exactly 1,024 UTF-8 bytes, in several segments, with non-ASCII in it. */
export const LONG_KEY = (() => {
  const key = `long/${'x'.repeat(250)}/${'ü'.repeat(120)}/${'日'.repeat(80)}/`;
  const rest = 1024 - Buffer.byteLength(key);
  return key + 'y'.repeat(rest);
})();

export interface Seeded {
  key: string;
  body: string | Buffer;
  contentType?: string;
  metadata?: Record<string, string>;
}

export const OBJECTS: Seeded[] = [
  { key: 'plain.txt', body: 'hello', contentType: 'text/plain; charset=utf-8', metadata: { owner: 'Ada' } },
  { key: 'unicode/日本語/ファイル.txt', body: 'ユニコード', contentType: 'text/plain; charset=utf-8', metadata: { note: 'naïve café ✓ 日本' } },
  { key: 'with space/a b .txt', body: 'spaces', contentType: 'application/json', metadata: { 'x-edge': ' leading and trailing ' } },
  { key: 'percent/100%/a%20b%zz', body: 'percent', contentType: 'application/x-kyozo; version="1.0"', metadata: { pct: '100%25 % %zz' } },
  { key: `deep/${Array.from({ length: 40 }, (_, i) => `d${i}`).join('/')}/leaf`, body: 'deep', contentType: 'image/svg+xml' },
  { key: LONG_KEY, body: 'long key', metadata: { n: '1024' } },
  { key: 'case/readme', body: 'lower' },
  { key: 'case/README', body: 'upper' },
  { key: 'case/ReadMe', body: 'mixed' },
  { key: 'norm/caf\u00e9', body: 'composed' },
  { key: 'norm/cafe\u0301', body: 'decomposed' },
  { key: 'empty', body: '', contentType: 'text/plain', metadata: { empty: '' } },
  { key: 'empty-default-type', body: '' },
  { key: 'binary.bin', body: Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 31) % 256)), contentType: 'application/octet-stream', metadata: { 'multi-word-name': 'v', n2: '2' } },
  { key: 'a', body: 'parent' },
  { key: 'a/b', body: 'child' },
  { key: '~tilde+plus', body: 'tilde' },
  { key: '.dotfile', body: 'dot' },
  { key: 'sp/ leading space', body: 'ls' },
  { key: 'sp/trailing space ', body: 'ts' },
  { key: 'dots/dot.', body: 'dot end' },
  { key: 'dots/.git/config', body: 'not a repo' },
  { key: 'hfs/.\u200cgit/x', body: 'hfs' },
  { key: 'emoji/📦 box', body: 'box', metadata: { icon: '📦' } },
  { key: 'bom/\ufeffbom', body: 'bom' },
  { key: `pct/${'%'.repeat(1020)}`, body: 'percent long' },
  { key: `emoji-long/${'😀'.repeat(253)}a`, body: 'emoji long' },
  { key: 'meta/near-limit', body: 'near', metadata: { big: 'n'.repeat(1700), 'x-uni': 'ü'.repeat(20) } },
];

export interface SeededVersion {
  body: string;
  message: string;
  author?: Author;
  contentType?: string;
  metadata?: Record<string, string>;
}

export const HISTORIES: Record<string, SeededVersion[]> = {
  'hist/doc.md': [
    { body: 'one', message: 'first', author: { name: 'Ada Lovelace', email: 'ada@example.com' }, contentType: 'text/markdown; charset=utf-8', metadata: { rev: '1' } },
    { body: 'two', message: 'second line one\nsecond line two\n\nbody paragraph', author: { name: 'Grace' }, contentType: 'text/markdown', metadata: { rev: '2' } },
    { body: 'three', message: 'résumé ✓ 日本語 — ünïcödé', author: { name: 'Zoë Ünicode', email: 'zoe@example.com' }, contentType: 'text/plain; charset=utf-8', metadata: { rev: '3', note: 'é' } },
  ],
  'hist/日本 doc%.txt': [
    { body: 'α', message: 'alpha', author: { name: 'Ada Lovelace', email: 'ada@example.com' } },
    { body: 'β', message: 'beta\n', author: { name: 'Grace' } },
  ],
  'hist/empty-version': [
    { body: '', message: 'empty at first', author: { name: 'Ada Lovelace', email: 'ada@example.com' } },
    { body: 'now full', message: 'filled', author: { name: 'Ada Lovelace', email: 'ada@example.com' } },
  ],
};

/**
 * Keys whose git write version ("write <key>", author Kyozo) fits in s3 metadata once percent-encoded, beside the
 * object's own metadata: the long non-ASCII keys and the near-limit metadata do not (see fidelity-refusals).
 */
export const shortKey = (key: string) => Buffer.byteLength(encodeURIComponent(key)) < 1500 && key !== 'meta/near-limit';

export async function seed(store: StorageProvider, keep: (key: string) => boolean = () => true): Promise<void> {
  for (const object of OBJECTS.filter((o) => keep(o.key))) await store.write(object.key, object.body, { contentType: object.contentType, metadata: object.metadata });
  for (const [key, versions] of Object.entries(HISTORIES)) {
    for (const version of versions) {
      await store.createVersion(key, version.body, { message: version.message, author: version.author, contentType: version.contentType, metadata: version.metadata });
    }
  }
}

export interface ObjectState {
  key: string;
  etag: string;
  size: number;
  contentType: string;
  metadata: Record<string, string>;
  bytesEtag: string;
}

export interface VersionState {
  etag: string;
  size: number;
  message?: string;
  author?: Author;
  contentType: string;
  metadata: Record<string, string>;
}

export interface Snapshot {
  objects: ObjectState[];
  versions: Record<string, VersionState[]>;
  versionCounts: Record<string, number>;
}

async function allVersionsOf(store: StorageProvider, key: string) {
  const out = [];
  let cursor: string | undefined;
  do {
    const page = await store.listVersions(key, { cursor });
    out.push(...page.items);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return out;
}

export async function snapshot(store: StorageProvider): Promise<Snapshot> {
  const objects: ObjectState[] = [];
  const versions: Record<string, VersionState[]> = {};
  const versionCounts: Record<string, number> = {};
  for (const info of await allObjects(store)) {
    const { body } = await store.read(info.key);
    const bytesEtag = sha256Hex(await readAll(body));
    objects.push({ key: info.key, etag: info.etag, size: info.size, contentType: info.contentType, metadata: { ...info.metadata }, bytesEtag });
    const list = (await allVersionsOf(store, info.key)).reverse();
    versionCounts[info.key] = list.length;
    if (info.key in HISTORIES) {
      versions[info.key] = [];
      for (const version of list) {
        const stat = await store.stat(info.key, { versionId: version.versionId });
        versions[info.key]!.push({
          etag: version.etag,
          size: version.size,
          message: version.message,
          author: version.author === undefined ? undefined : { ...version.author },
          contentType: stat.contentType,
          metadata: { ...stat.metadata },
        });
      }
    }
  }
  return { objects, versions, versionCounts };
}

/** The histories the data set made, as a source that records only what it is asked to (explicit) holds them. */
export function expectedHistories(): Record<string, VersionState[]> {
  const out: Record<string, VersionState[]> = {};
  for (const [key, list] of Object.entries(HISTORIES)) {
    out[key] = list.map((version) => ({
      etag: sha256Hex(version.body),
      size: Buffer.byteLength(version.body),
      message: version.message,
      author: version.author,
      contentType: version.contentType ?? 'application/octet-stream',
      metadata: version.metadata ?? {},
    }));
  }
  return out;
}
