import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { linkFileAtomic, stageFile, writeFileAtomic } from '../../src/providers/atomic-file.js';

describe('atomic files', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-atomic-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a body that fails midway leaves the old file and no temp file', async () => {
    const target = path.join(dir, 'file');
    await writeFile(target, 'old');
    const failing = Readable.from(
      (async function* () {
        yield Buffer.from('new content that never ');
        throw new Error('client went away');
      })(),
    );
    await expect(writeFileAtomic(target, failing, { fsync: true })).rejects.toThrow('client went away');
    expect(await readFile(target, 'utf8')).toBe('old');
    expect(await readdir(dir)).toEqual(['file']);
  });

  it('a staged file leaves the target as it was until published; discarded, it leaves nothing', async () => {
    const target = path.join(dir, 'file');
    await writeFile(target, 'old');
    const published = await stageFile(target, 'new', { fsync: true });
    expect(await readFile(target, 'utf8')).toBe('old');
    await published.publish();
    expect(await readFile(target, 'utf8')).toBe('new');
    const discarded = await stageFile(target, 'newer', { fsync: true });
    await discarded.discard();
    expect(await readFile(target, 'utf8')).toBe('new');
    expect(await readdir(dir)).toEqual(['file']);
  });

  it('writes bytes, strings and async iterables of chunks', async () => {
    await writeFileAtomic(path.join(dir, 'bytes'), new Uint8Array([104, 105]), { fsync: false });
    await writeFileAtomic(path.join(dir, 'string'), 'hi', { fsync: false });
    await writeFileAtomic(
      path.join(dir, 'chunks'),
      (async function* () {
        yield 'h';
        yield Buffer.from('i');
      })(),
      { fsync: true },
    );
    for (const name of ['bytes', 'string', 'chunks']) expect(await readFile(path.join(dir, name), 'utf8')).toBe('hi');
  });

  it('makes a missing directory, by default with mkdir -p, else with onMissingDirectory', async () => {
    await writeFileAtomic(path.join(dir, 'a', 'b', 'file'), 'x', { fsync: true });
    expect(await readFile(path.join(dir, 'a', 'b', 'file'), 'utf8')).toBe('x');

    const made: string[] = [];
    const refuse = async () => {
      made.push('asked');
      throw new Error('not here');
    };
    await expect(writeFileAtomic(path.join(dir, 'c', 'file'), 'x', { fsync: true, onMissingDirectory: refuse })).rejects.toThrow('not here');
    expect(made).toEqual(['asked']);
    expect(await readdir(dir)).toEqual(['a']);
  });

  it('makes the directory again while a concurrent cleanup keeps removing it', async () => {
    const sub = path.join(dir, 'pruned');
    let made = 0;
    // Another process's delete prunes the empty directory right after each of the first three mkdirs.
    const onMissingDirectory = async () => {
      await mkdir(sub, { recursive: true });
      if (++made <= 3) await rmdir(sub);
    };
    await writeFileAtomic(path.join(sub, 'file'), 'content', { fsync: false, onMissingDirectory });
    expect(made).toBe(4);
    expect(await readFile(path.join(sub, 'file'), 'utf8')).toBe('content');
  });

  it('linkFileAtomic gives the target the source content; replacing the target later leaves the source as it was', async () => {
    const source = path.join(dir, 'source');
    const target = path.join(dir, 'target');
    await writeFile(source, 'version one');
    await writeFile(target, 'previous');
    await linkFileAtomic(source, target, { fsync: true });
    expect(await readFile(target, 'utf8')).toBe('version one');
    await writeFileAtomic(target, 'version two', { fsync: true });
    expect(await readFile(source, 'utf8')).toBe('version one');
    expect((await readdir(dir)).sort()).toEqual(['source', 'target']);
  });
});
