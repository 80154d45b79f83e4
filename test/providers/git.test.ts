/**
 * What only the git provider promises, checked against the real git CLI: the repository stays valid for git,
 * git and the store agree on every key's history and content, diffs apply with `git apply`, branches, commits
 * serialized under concurrency (in-process and across processes with the Redis lock), and the per-key index
 * rebuilt from history when it is missing or stale.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, NotFoundError, PayloadTooLargeError, PreconditionFailedError, ProviderUnavailableError } from '../../src/providers/errors.js';
import { unifiedDiff } from '../../src/providers/git-diff.js';
import { KeyIndex, SCAN_LIMIT } from '../../src/providers/git-index.js';
import { contentPath, forgottenKeys, keyOfPath, recordPath, treePathOf } from '../../src/providers/git-layout.js';
import { repoLock } from '../../src/providers/git-lock.js';
import { GitProvider, type GitDiff } from '../../src/providers/git.js';
import { validateKey } from '../../src/providers/keys.js';
import { closeRedis } from '../../src/redis.js';
import { connectRedis, deleteKeys, uniquePrefix, TEST_REDIS_URL } from '../support/redis.js';
import { allPages } from '../support/paging.js';
import { gitFixture } from '../support/git.js';

const { tempRepo, openProvider } = gitFixture('git-test');

const run = promisify(execFile);
const sha256 = (content: Uint8Array | string) => createHash('sha256').update(content).digest('hex');

async function git(gitdir: string, args: string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<string> {
  const child = run('git', [`--git-dir=${gitdir}`, ...args], {
    encoding: 'buffer',
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: os.tmpdir(), ...options.env },
  });
  if (options.input !== undefined) {
    child.child.stdin?.end(options.input);
  }
  const { stdout } = await child;
  return (stdout as Buffer).toString('utf8');
}

async function gitBytes(gitdir: string, args: string[]): Promise<Buffer> {
  const { stdout } = await run('git', [`--git-dir=${gitdir}`, ...args], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
  return stdout as Buffer;
}

/** `git log` of a key as the store defines its versions: content or record changed, deletions left out. */
async function cliVersions(gitdir: string, key: string, branch = 'main'): Promise<string[]> {
  const out = await git(gitdir, ['log', '--format=%H', '--diff-filter=AM', branch, '--', contentPath(key).join('/'), recordPath(key).join('/')]);
  return out.split('\n').filter(Boolean);
}

async function readText(provider: GitProvider, key: string, versionId?: string): Promise<string> {
  const { body } = await provider.read(key, versionId ? { versionId } : {});
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function allVersionIds(provider: GitProvider, key: string, branch?: string): Promise<string[]> {
  return (await allPages((cursor) => provider.listVersions(key, { cursor, limit: 3, branch }))).flat().map((item) => item.versionId);
}





const awkwardKeys = ['a', 'a/b', 'a/b/c', '.hidden', 'dir/.git/config', 'x~1', 'git~1', '100%', ' spaced ', 'ünï/cødé 🌍', 'zero\u200Cwidth/.\u200Cgit'];

describe('tree layout', () => {
  it('maps keys to tree paths and back, for any valid key', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ minLength: 1, maxLength: 12, unit: 'grapheme' }), { minLength: 1, maxLength: 4 }), (segments) => {
        const key = segments.join('/');
        try {
          validateKey(key);
        } catch {
          return;
        }
        expect(keyOfPath(contentPath(key))).toBe(key);
        expect(keyOfPath(recordPath(key).slice(2))).toBe(key);
      }),
      { numRuns: 500 },
    );
  });

  it('escapes names git refuses and keeps a file and a directory of one name apart', () => {
    expect(treePathOf('docs/guide.md')).toBe('docs/guide.md~');
    expect(treePathOf('a')).toBe('a~');
    expect(treePathOf('a/b')).toBe('a/b~');
    expect(treePathOf('.git/x')).toBe('%2Egit/x~');
    expect(treePathOf('git~1/x')).toBe('git%7E1/x~');
    expect(treePathOf('100%')).toBe('100%25~');
    expect(keyOfPath(['README.md'])).toBeUndefined();
    expect(keyOfPath(['%41~'])).toBeUndefined(); // not the canonical spelling of "A"
  });
});

describe('the repository as git sees it', () => {
  let gitdir: string;
  let provider: GitProvider;
  const history = new Map<string, { versionId: string; content: string }[]>();

  beforeAll(async () => {
    gitdir = await tempRepo();
    provider = await GitProvider.open({ repoPath: gitdir });
    const remember = (key: string, versionId: string, content: string) => history.set(key, [...(history.get(key) ?? []), { versionId, content }]);
    for (const key of awkwardKeys) {
      remember(key, (await provider.write(key, `first ${key}`, { contentType: 'text/plain', metadata: { n: '1' } })).versionId!, `first ${key}`);
    }
    const v = await provider.createVersion('a', 'second a', { message: 'second\n\nwith a body', author: { name: 'Ada', email: 'ada@example.com' } });
    remember('a', v.versionId, 'second a');
    remember('a', (await provider.write('a', 'second a')).versionId!, 'second a'); // same bytes: still a version
    await provider.delete('a/b');
    remember('a/b', (await provider.write('a/b', 'after delete')).versionId!, 'after delete');
    const restored = await provider.restoreVersion('a', history.get('a')![0]!.versionId);
    remember('a', restored.versionId, 'first a');
    await provider.createVersion('nameless', 'x', { message: 'by someone without email', author: { name: 'Nobody' } });
    remember('nameless', (await provider.listVersions('nameless')).items[0]!.versionId, 'x');
  });

  afterAll(async () => {
    await provider.close();
  });

  it('passes git fsck --strict', async () => {
    const out = await run('git', [`--git-dir=${gitdir}`, 'fsck', '--strict', '--no-dangling'], { encoding: 'utf8' });
    expect(out.stderr.trim()).toBe('');
    expect(out.stdout.trim()).toBe('');
  });

  it('git log of a key lists exactly its versions, newest first', async () => {
    for (const [key, versions] of history) {
      const listed = await allVersionIds(provider, key);
      expect(listed).toEqual(versions.map((version) => version.versionId).reverse());
      expect(await cliVersions(gitdir, key)).toEqual(listed);
    }
  });

  it('git show <version>:<path> prints that version', async () => {
    for (const [key, versions] of history) {
      for (const version of versions) {
        expect((await gitBytes(gitdir, ['show', `${version.versionId}:${treePathOf(key)}`])).toString('utf8')).toBe(version.content);
        expect(await readText(provider, key, version.versionId)).toBe(version.content);
      }
    }
  });

  it('every write is its own commit, with the message and author it was given', async () => {
    const commits = Number((await git(gitdir, ['rev-list', '--count', 'main'])).trim());
    // the first commit, one per write/version/restore, one for the delete
    expect(commits).toBe(1 + [...history.values()].reduce((sum, versions) => sum + versions.length, 0) + 1);
    const a = (await provider.listVersions('a')).items;
    const second = a.find((version) => version.message?.startsWith('second'))!;
    expect(second).toMatchObject({ message: 'second\n\nwith a body', author: { name: 'Ada', email: 'ada@example.com' } });
    expect((await git(gitdir, ['log', '-1', '--format=%an <%ae>%n%B', second.versionId])).trim()).toBe('Ada <ada@example.com>\nsecond\n\nwith a body');
    expect(a[0]!.message).toBe(`restore ${history.get('a')![0]!.versionId}`);
    expect((await provider.listVersions('nameless')).items[0]!.author).toEqual({ name: 'Nobody' });
  });

  it('keeps contentType and metadata in a record beside the content', async () => {
    const record = JSON.parse(await git(gitdir, ['show', `main:${recordPath('a/b/c').join('/')}`])) as Record<string, unknown>;
    expect(record).toMatchObject({ etag: sha256('first a/b/c'), size: 11, contentType: 'text/plain', metadata: { n: '1' } });
    expect(await provider.stat('a/b/c')).toMatchObject({ contentType: 'text/plain', metadata: { n: '1' }, etag: sha256('first a/b/c') });
  });

  it('lists keys a and a/b side by side', async () => {
    const keys = (await provider.list()).items.map((item) => item.key);
    expect(keys).toEqual(expect.arrayContaining(['a', 'a/b', 'a/b/c', '.hidden']));
  });
});

describe('delete', () => {
  it('with allVersions forgets the versions in the store while git keeps the history', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const v1 = await provider.createVersion('gone', 'one', { message: 'one' });
    await provider.createVersion('gone', 'two', { message: 'two' });
    await provider.delete('gone', { allVersions: true });
    expect((await provider.listVersions('gone')).items).toEqual([]);
    await expect(provider.read('gone', { versionId: v1.versionId })).rejects.toBeInstanceOf(NotFoundError);
    expect(await cliVersions(gitdir, 'gone')).toHaveLength(2);
    expect((await git(gitdir, ['log', '-1', '--format=%B', 'main'])).trim()).toBe('delete gone (all versions)\n\nKyozo-Forget-Versions: "gone"');
    const v3 = await provider.write('gone', 'three');
    expect(await allVersionIds(provider, 'gone')).toEqual([v3.versionId]);
  });

  it('refuses messages carrying a line of the store\'s own trailers', async () => {
    const provider = await openProvider(await tempRepo());
    const v1 = await provider.write('b', 'b one');
    await provider.delete('b');
    for (const message of ['note\n\nKyozo-Forget-Versions: b', 'note\r\n\r\nkyozo-forget-versions: b', 'Kyozo-Forget-Versions: b']) {
      await expect(provider.createVersion('a', 'x', { message })).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(provider.restoreVersion('b', v1.versionId!, { message })).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    await provider.createVersion('a', 'x', { message: 'mentions Kyozo-Forget-Versions: b mid-line' });
    expect(await allVersionIds(provider, 'b')).toEqual([v1.versionId]);
  });

  it('forgets a key from history only for a commit that removed it or changed nothing else', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const b = [(await provider.write('b', 'b one')).versionId!, (await provider.write('b', 'b two')).versionId!];
    await provider.delete('b');
    const a1 = await provider.write('a', 'a one');
    await provider.write('gone', 'g');
    await provider.delete('gone');
    await provider.delete('gone', { allVersions: true }); // a commit that changes no file: its trailer alone forgets
    await provider.write('a', 'a two');
    // A commit from outside the store (or one made before messages were checked) that writes `a` and names `b`.
    const tree = (await git(gitdir, ['rev-parse', `${a1.versionId}^{tree}`])).trim();
    const identity = ['-c', 'user.name=Cli', '-c', 'user.email=cli@example.com'];
    const forged = (await git(gitdir, [...identity, 'commit-tree', tree, '-p', 'main', '-m', 'note\n\nKyozo-Forget-Versions: b'])).trim();
    await git(gitdir, ['update-ref', 'refs/heads/main', forged]);
    const expected = [...b].reverse();
    expect(await allVersionIds(provider, 'b')).toEqual(expected); // this process, catching up on the commit
    await rm(path.dirname(KeyIndex.indexFile(gitdir, 'main')), { recursive: true });
    const rebuilt = await openProvider(gitdir);
    expect(await allVersionIds(rebuilt, 'b')).toEqual(expected);
    expect(await allVersionIds(rebuilt, 'gone')).toEqual([]);
    expect(await readText(rebuilt, 'b', b[0])).toBe('b one');
  });

  it('with allVersions forgets a key ending in whitespace, not its trimmed twin, in every process and after a rebuild', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const other = await openProvider(gitdir); // catches up from history, not from this process's index
    const padded = ['note ', 'x\u00a0', 'y\u3000'];
    for (const key of padded) {
      const twin = key.slice(0, -1);
      await provider.write(twin, 'one');
      await provider.write(twin, 'two');
      await provider.delete(twin); // its versions stay
      await provider.write(key, 'padded');
    }
    await provider.delete('x\u00a0'); // so its forget commit changes no file: the trailer alone names the key
    for (const key of padded) await provider.delete(key, { allVersions: true });
    const answer = async (reader: GitProvider) =>
      Promise.all(padded.flatMap((key) => [key, key.slice(0, -1)]).map(async (key) => [key, (await allVersionIds(reader, key)).length]));
    const expected = padded.flatMap((key) => [[key, 0], [key.slice(0, -1), 2]]);
    expect(await answer(provider)).toEqual(expected);
    expect(await answer(other)).toEqual(expected);
    await rm(path.dirname(KeyIndex.indexFile(gitdir, 'main')), { recursive: true });
    expect(await answer(await openProvider(gitdir))).toEqual(expected);
  });

  it('reads the forget trailers of older repositories, whose keys are plain, byte for byte', () => {
    expect(forgottenKeys('delete old  (all versions)\n\nKyozo-Forget-Versions: old ')).toEqual(['old ']);
    expect(forgottenKeys('delete old\u3000 (all versions)\n\nKyozo-Forget-Versions: old\u3000\n')).toEqual(['old\u3000']);
    expect(forgottenKeys('delete "q (all versions)\n\nKyozo-Forget-Versions: "q')).toEqual(['"q']);
    expect(forgottenKeys('delete new  (all versions)\n\nKyozo-Forget-Versions: "new "')).toEqual(['new ']);
  });

  it('of a missing key commits nothing', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    await provider.delete('never');
    await provider.delete('never', { allVersions: true });
    expect((await git(gitdir, ['rev-list', '--count', 'main'])).trim()).toBe('1');
  });
});

describe('diff', () => {
  let gitdir: string;
  let provider: GitProvider;
  beforeAll(async () => {
    gitdir = await tempRepo();
    provider = await GitProvider.open({ repoPath: gitdir });
  });
  afterAll(() => provider.close());

  async function applies(before: string | null, diff: GitDiff, after: string | null): Promise<void> {
    if (diff.binary) throw new Error('expected a text diff');
    const dir = await tempRepo();
    if (before !== null) await writeFile(path.join(dir, 'file'), before);
    await writeFile(path.join(dir, 'patch'), diff.patch.replaceAll(`a/${diff.key}`, 'a/file').replaceAll(`b/${diff.key}`, 'b/file'));
    await run('git', ['apply', '--unidiff-zero', 'patch'], { cwd: dir });
    if (after === null) await expect(readFile(path.join(dir, 'file'))).rejects.toThrow();
    else expect(await readFile(path.join(dir, 'file'), 'utf8')).toBe(after);
  }

  it('gives a unified diff that git apply turns into the newer version', async () => {
    const before = Array.from({ length: 40 }, (_, i) => `line ${i}`).join('\n') + '\n';
    const after = before.replace('line 3\n', 'line three\n').replace('line 30\n', '').concat('tail without newline');
    const v1 = await provider.createVersion('doc.txt', before, { message: 'one' });
    const v2 = await provider.createVersion('doc.txt', after, { message: 'two' });
    const diff = await provider.diff('doc.txt', v1.versionId, v2.versionId);
    expect(diff).toMatchObject({ binary: false, additions: 2, deletions: 2 });
    if (!diff.binary) expect(diff.patch).toContain('\\ No newline at end of file');
    await applies(before, diff, after);
    expect((await provider.diff('doc.txt', v2.versionId)).binary).toBe(false); // `to` defaults to the branch head
    expect(await provider.diff('doc.txt', v2.versionId, 'main')).toMatchObject({ patch: '', additions: 0, deletions: 0 });
  });

  it('diffs against /dev/null where the key does not exist', async () => {
    const before = await provider.createVersion('born.txt', 'x', { message: 'before' });
    await provider.delete('born.txt');
    const created = await provider.createVersion('born.txt', 'hello\nworld\n', { message: 'born' });
    const diff = await provider.diff('born.txt', before.versionId, created.versionId);
    expect(diff.binary).toBe(false);
    const afterDelete = (await git(gitdir, ['rev-parse', `${created.versionId}~1`])).trim();
    await provider.createBranch('before-born', afterDelete);
    const fromNothing = await provider.diff('born.txt', 'before-born', created.versionId);
    if (!fromNothing.binary) expect(fromNothing.patch.startsWith('--- /dev/null\n+++ b/born.txt\n@@ -0,0 +1,2 @@')).toBe(true);
    await applies(null, fromNothing, 'hello\nworld\n');
  });

  it('answers binary content with sizes and etags instead of a patch', async () => {
    const one = await provider.write('blob.bin', Buffer.from([0, 1, 2, 3]));
    const two = await provider.write('blob.bin', Buffer.from([0, 1, 2, 3, 4]));
    expect(await provider.diff('blob.bin', one.versionId!, two.versionId!)).toMatchObject({
      binary: true,
      before: { size: 4, etag: sha256(Buffer.from([0, 1, 2, 3])) },
      after: { size: 5 },
    });
  });

  it('rejects unknown commits and keys missing on both sides', async () => {
    await expect(provider.diff('doc.txt', '0'.repeat(40))).rejects.toBeInstanceOf(NotFoundError);
    await expect(provider.diff('no-such-key', 'main', 'main')).rejects.toBeInstanceOf(NotFoundError);
    await expect(provider.diff('doc.txt', 'no-such-branch')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('serves no version that delete with allVersions forgot, nor a commit that did not write the key', async () => {
    const v1 = await provider.write('creds', 'password=hunter2\n');
    const v2 = await provider.write('creds', 'password=rotated\n');
    const unrelated = await provider.write('not-creds', 'x');
    expect((await provider.diff('creds', v1.versionId!, v2.versionId!)).binary).toBe(false);
    await expect(provider.diff('creds', unrelated.versionId!, v2.versionId!)).rejects.toBeInstanceOf(NotFoundError);
    await provider.delete('creds', { allVersions: true });
    await expect(provider.diff('creds', v1.versionId!, v2.versionId!)).rejects.toBeInstanceOf(NotFoundError);
    await expect(provider.diff('creds', v1.versionId!)).rejects.toBeInstanceOf(NotFoundError);
    await expect(provider.diff('creds', 'main', v2.versionId!)).rejects.toBeInstanceOf(NotFoundError);
    const v3 = await provider.write('creds', 'password=new\n');
    expect(await provider.diff('creds', v3.versionId!, 'main')).toMatchObject({ from: v3.versionId, patch: '' });
  });

  it("gives an empty file made or deleted as git's header alone, which git apply takes", async () => {
    const dir = await tempRepo();
    const apply = async (patch: string) => {
      await writeFile(path.join(dir, 'patch'), patch);
      await run('git', ['apply', 'patch'], { cwd: dir });
    };
    const made = unifiedDiff(null, '', 'file');
    expect(made).toEqual({ patch: 'diff --git a/file b/file\nnew file mode 100644\n', additions: 0, deletions: 0 });
    await apply(made.patch);
    expect(await readFile(path.join(dir, 'file'), 'utf8')).toBe('');
    await apply(unifiedDiff('', null, 'file').patch);
    await expect(readFile(path.join(dir, 'file'))).rejects.toThrow();
    // A name git quotes (a key may hold `"`) is quoted as git does, or git apply finds no file name in the header.
    const quoted = 'say "hi".txt';
    await apply(unifiedDiff(null, '', quoted).patch);
    expect(await readFile(path.join(dir, quoted), 'utf8')).toBe('');
    await apply(unifiedDiff('', null, quoted).patch);
    await expect(readFile(path.join(dir, quoted))).rejects.toThrow();
  });

  it('past 2,000 differing lines gives the changed middle as one deletion and one insertion, still a patch that applies', async () => {
    // 12,000 lines, every fourth changed (lines 1 to 11,997): 6,000 edits.
    const before = Array.from({ length: 12_000 }, (_, i) => `line ${i}`).join('\n') + '\n';
    const after = Array.from({ length: 12_000 }, (_, i) => (i % 4 === 1 ? `changed ${i}` : `line ${i}`)).join('\n') + '\n';
    const diff = unifiedDiff(before, after, 'file');
    expect(diff).toMatchObject({ additions: 11_997, deletions: 11_997 });
    const dir = await tempRepo();
    await writeFile(path.join(dir, 'file'), before);
    await writeFile(path.join(dir, 'patch'), diff.patch);
    await run('git', ['apply', 'patch'], { cwd: dir });
    expect(await readFile(path.join(dir, 'file'), 'utf8')).toBe(after);
  });

  it('refuses content too large to diff on the event loop with 413, by lines and by bytes', async () => {
    const manyLines = 'x\n'.repeat(100_001);
    expect(() => unifiedDiff(manyLines, `${manyLines}y\n`, 'file')).toThrow(PayloadTooLargeError);
    const big = await provider.write('big.txt', `${'x'.repeat(99)}\n`.repeat(200_000)); // 200,000 lines, 20 MB
    const small = await provider.write('big.txt', 'now small\n');
    const refused = await provider.diff('big.txt', big.versionId!, small.versionId!).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(PayloadTooLargeError);
    expect((refused as Error).message).toMatch(/too large to diff.*20,000,000 bytes/);
  });

  it('produces patches git apply accepts for arbitrary line edits', async () => {
    const line = fc.constantFrom('a', 'b', 'c', 'd', '', 'e f');
    const text = fc.tuple(fc.array(line, { maxLength: 30 }), fc.boolean()).map(([lines, eol]) => lines.join('\n') + (eol && lines.length > 0 ? '\n' : ''));
    const dir = await tempRepo();
    await fc.assert(
      fc.asyncProperty(text, text, async (before, after) => {
        const { patch } = unifiedDiff(before, after, 'file');
        if (before === after) {
          expect(patch).toBe('');
          return;
        }
        await writeFile(path.join(dir, 'file'), before);
        await writeFile(path.join(dir, 'patch'), patch);
        await run('git', ['apply', '--unidiff-zero', 'patch'], { cwd: dir });
        expect(await readFile(path.join(dir, 'file'), 'utf8')).toBe(after);
      }),
      { numRuns: 60 },
    );
  });
});

describe('branches', () => {
  it('creates, lists and writes to branches without touching the store branch', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    await provider.write('shared', 'on main');
    const branch = await provider.createBranch('feature/x');
    expect(branch).toMatchObject({ name: 'feature/x', isDefault: false });
    const onBranch = await provider.createVersion('shared', 'on feature', { message: 'feature work', branch: 'feature/x' });
    await provider.write('only-on-branch', 'b', { branch: 'feature/x' });

    expect(await readText(provider, 'shared')).toBe('on main');
    expect((await provider.read('shared', { branch: 'feature/x' }).then((r) => r.info)).etag).toBe(sha256('on feature'));
    await expect(provider.stat('only-on-branch')).rejects.toBeInstanceOf(NotFoundError);
    expect((await provider.list({ branch: 'feature/x' })).items.map((item) => item.key)).toEqual(['only-on-branch', 'shared']);
    expect(await allVersionIds(provider, 'shared', 'feature/x')).toEqual(await cliVersions(gitdir, 'shared', 'feature/x'));
    // a version made on a branch is readable by its id from the store's branch too
    expect(await readText(provider, 'shared', onBranch.versionId)).toBe('on feature');

    const branches = await provider.listBranches();
    expect(branches.map((b) => [b.name, b.isDefault])).toEqual([
      ['feature/x', false],
      ['main', true],
    ]);
    expect(branches[0]!.head).toBe((await git(gitdir, ['rev-parse', 'feature/x'])).trim());
    const diff = await provider.diff('shared', 'main', 'feature/x');
    expect(diff).toMatchObject({ binary: false, additions: 1, deletions: 1 });
  });

  it('refuses an existing branch, a bad name and writes to a missing branch', async () => {
    const provider = await openProvider(await tempRepo());
    await provider.createBranch('dev');
    await expect(provider.createBranch('dev')).rejects.toBeInstanceOf(PreconditionFailedError);
    await expect(provider.createBranch('bad..name')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(provider.createBranch('from-nowhere', 'nope')).rejects.toBeInstanceOf(NotFoundError);
    await expect(provider.write('k', 'v', { branch: 'missing' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('starts a branch from an older version', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const v1 = await provider.write('k', 'one');
    await provider.write('k', 'two');
    await provider.createBranch('old', v1.versionId);
    expect((await provider.stat('k', { branch: 'old' })).etag).toBe(sha256('one'));
  });
});

describe('authors', () => {
  it('rejects names and emails that would break the commit header', async () => {
    const provider = await openProvider(await tempRepo());
    await expect(provider.createVersion('k', 'v', { message: 'm', author: { name: 'Eve <evil>' } })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(provider.createVersion('k', 'v', { message: 'm', author: { name: 'Eve', email: 'a\nb' } })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(provider.createVersion('k', 'v', { message: 'm', author: { name: '  ' } })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('records the author as given and refuses whitespace around a name or an email instead of trimming it', async () => {
    const provider = await openProvider(await tempRepo());
    for (const author of [{ name: ' Ada' }, { name: 'Ada\u3000' }, { name: 'Ada', email: ' ada@example.com ' }, { name: 'Ada', email: 'ada@example.com\t' }]) {
      await expect(provider.createVersion('k', 'v', { message: 'm', author })).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    const author = { name: 'Ada  Lovelace', email: 'ada@example.com' };
    const version = await provider.createVersion('k', 'v', { message: 'm', author });
    expect(version.author).toEqual(author);
    expect((await provider.listVersions('k')).items[0]?.author).toEqual(author);
  });

  it('refuses a NUL in a message and lone surrogates in messages and authors, so git fsck and a reopen agree', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const v1 = await provider.write('k', 'v');
    const refused = [
      { message: 'a\u0000b' },
      { message: 'bad \ud800 surrogate' },
      { message: 'bad \udc00' },
      { message: 'm', author: { name: 'A\udc00da' } },
      { message: 'm', author: { name: 'Ada', email: 'ada\ud83d@example.com' } },
    ];
    for (const options of refused) {
      await expect(provider.createVersion('k', 'v', options)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(provider.restoreVersion('k', v1.versionId!, options)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    await provider.createVersion('k', 'w', { message: 'astral 🌍 is fine', author: { name: 'Ada 🌍' } });
    expect(await git(gitdir, ['fsck', '--strict', '--no-dangling'])).toBe('');
  });
});

describe('concurrency', () => {
  it('20 racing writes to different keys are 20 commits, none lost', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => provider.write(`race/${i}`, `value ${i}`)));
    expect(new Set(results.map((info) => info.versionId)).size).toBe(20);
    expect((await git(gitdir, ['rev-list', '--count', 'main'])).trim()).toBe('21');
    expect((await provider.list({ prefix: 'race/' })).items).toHaveLength(20);
    for (let i = 0; i < 20; i++) expect((await git(gitdir, ['show', `main:race/${i}~`]))).toBe(`value ${i}`);
  });

  it('two providers on one repository in one process share its lock', async () => {
    const gitdir = await tempRepo();
    const first = await openProvider(gitdir);
    const second = await openProvider(gitdir);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? first : second).write(`both/${i}`, `v${i}`)),
    );
    expect((await git(gitdir, ['rev-list', '--count', 'main'])).trim()).toBe('21');
    expect((await first.list({ prefix: 'both/' })).items).toHaveLength(20);
    expect((await second.list({ prefix: 'both/' })).items).toHaveLength(20);
  });

  it('a read issued after another provider\'s write resolved sees the write, even while a catch-up is under way', async () => {
    const gitdir = await tempRepo();
    const writer = await openProvider(gitdir);
    const reader = await openProvider(gitdir);
    // A slow shared volume: the reader's ref reads take 100 ms, so its catch-ups overlap the writer's commit.
    const store = (reader as unknown as { store: { resolveRef(ref: string): Promise<string | undefined> } }).store;
    const resolveRef = store.resolveRef.bind(store);
    store.resolveRef = async (ref) => {
      const head = await resolveRef(ref);
      await new Promise((resolve) => setTimeout(resolve, 100));
      return head;
    };
    await writer.write('other', 'x');
    const earlier = reader.stat('other'); // starts a catch-up that reads the head before the next write
    await new Promise((resolve) => setTimeout(resolve, 20));
    const written = await writer.write('fresh', 'hello');
    expect((await reader.stat('fresh')).etag).toBe(written.etag);
    await earlier;
  });

  it('ifMatch is checked in commit order within a chain', async () => {
    const provider = await openProvider(await tempRepo());
    const first = await provider.write('cas', 'zero');
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => provider.write('cas', `try ${i}`, { ifMatch: first.etag })));
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
    expect(outcomes.filter((outcome) => outcome.status === 'rejected').every((o) => (o as PromiseRejectedResult).reason instanceof PreconditionFailedError)).toBe(true);
  });

  it('a commit made with the git CLI meanwhile is picked up, not overwritten', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    await provider.write('mine', 'one');
    const cliCommit = await cliWrite(gitdir, 'theirs~', 'from the cli');
    const mine = await provider.write('mine', 'two');
    expect((await git(gitdir, ['rev-parse', 'main~1'])).trim()).toBe(cliCommit);
    expect(await readText(provider, 'theirs')).toBe('from the cli');
    expect(await provider.stat('theirs')).toMatchObject({ etag: sha256('from the cli'), versionId: cliCommit, contentType: 'application/octet-stream' });
    expect((await provider.stat('mine')).versionId).toBe(mine.versionId);
  });
});

/** Commits `content` at `treePath` on main with plumbing, as another git user would. */
async function cliWrite(gitdir: string, treePath: string, content: string): Promise<string> {
  const indexFile = path.join(await tempRepo(), 'index');
  const env = { GIT_INDEX_FILE: indexFile };
  const blob = (await git(gitdir, ['hash-object', '-w', '--stdin'], { input: content })).trim();
  await git(gitdir, ['read-tree', 'main'], { env });
  await git(gitdir, ['update-index', '--add', '--cacheinfo', `100644,${blob},${treePath}`], { env });
  const tree = (await git(gitdir, ['write-tree'], { env })).trim();
  const commit = (await git(gitdir, ['-c', 'user.name=Cli', '-c', 'user.email=cli@example.com', 'commit-tree', tree, '-p', 'main', '-m', 'cli edit'])).trim();
  await git(gitdir, ['update-ref', 'refs/heads/main', commit]);
  return commit;
}

describe('redis lock', () => {
  let redis: Awaited<ReturnType<typeof connectRedis>>;
  let prefix: string;
  beforeAll(async () => {
    redis = await connectRedis('producer');
    prefix = uniquePrefix('git-lock');
  });
  afterAll(async () => {
    await deleteKeys(redis, prefix);
    await closeRedis(redis);
  });

  it('excludes holders that share no process mutex', async () => {
    const key = `${prefix}:exclusion`;
    const locks = [repoLock('/repo/as/seen/by/one', { redis, key }), repoLock('/repo/as/seen/by/two', { redis, key })];
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        locks[i % 2]!.run(async () => {
          inside++;
          most = Math.max(most, inside);
          await new Promise((resolve) => setTimeout(resolve, 5));
          inside--;
        }),
      ),
    );
    expect(most).toBe(1);
    expect(await redis.exists(key)).toBe(0);
  });

  it('renews the lease while held and waits out a crashed holder', async () => {
    const key = `${prefix}:lease`;
    await redis.set(key, 'crashed-holder', 'PX', 300);
    const lock = repoLock('/repo/lease', { redis, key, leaseMs: 1_000, acquireTimeoutMs: 10_000 });
    const other = repoLock('/repo/other', { redis, key, leaseMs: 1_000, acquireTimeoutMs: 200 });
    await lock.run(async (lease) => {
      await new Promise((resolve) => setTimeout(resolve, 2_500)); // past two leases: only renewal keeps it
      lease.assertHeld();
      await expect(other.run(async () => undefined)).rejects.toBeInstanceOf(ProviderUnavailableError);
    });
  });

  it('never releases a lease it no longer holds', async () => {
    const key = `${prefix}:stolen`;
    const lock = repoLock('/repo/stolen', { redis, key, leaseMs: 600 });
    await lock.run(async (lease) => {
      await redis.set(key, 'someone-else');
      // Past the lease: lost either way, found by a renewal (every 200 ms) or by the lease running out.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(() => lease.assertHeld()).toThrow(ProviderUnavailableError);
    });
    expect(await redis.get(key)).toBe('someone-else');
  });

  it('two worker processes writing into one repository lose no commit', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir, { redisLock: { redis, keyPrefix: `${prefix}:` } });
    const script = path.join(import.meta.dirname, 'fixtures', 'git-writer.ts');
    const worker = (label: string) =>
      run(process.execPath, ['--import', 'tsx', script, gitdir, TEST_REDIS_URL, `${prefix}:`, label, '15'], { cwd: process.cwd() });
    await Promise.all([worker('one'), worker('two'), ...Array.from({ length: 10 }, (_, i) => provider.write(`workers/here/${i}`, `here ${i}`))]);
    expect((await git(gitdir, ['rev-list', '--count', 'main'])).trim()).toBe(String(1 + 15 + 15 + 10));
    expect((await provider.list({ prefix: 'workers/' })).items).toHaveLength(40);
    await run('git', [`--git-dir=${gitdir}`, 'fsck', '--strict']);
  });
});

describe('per-key index', () => {
  async function snapshotOf(provider: GitProvider, keys: string[]) {
    const versions = await Promise.all(keys.map(async (key) => (await provider.listVersions(key)).items));
    return { list: (await provider.list()).items, versions, stats: (await provider.stats()).versions };
  }

  async function populated(gitdir: string): Promise<{ keys: string[]; answer: Awaited<ReturnType<typeof snapshotOf>> }> {
    const provider = await GitProvider.open({ repoPath: gitdir });
    const keys = ['k/0', 'k/1', 'k/2', 'lone'];
    for (let round = 0; round < 4; round++) {
      for (const key of keys) await provider.createVersion(key, `${key} r${round}`, { message: `round ${round}`, metadata: { round: String(round) } });
    }
    await provider.delete('k/1');
    await provider.delete('lone', { allVersions: true });
    const answer = await snapshotOf(provider, keys);
    await provider.close();
    return { keys, answer };
  }

  it('is rebuilt from history with the same answers when its file is deleted', async () => {
    const gitdir = await tempRepo();
    const { keys, answer } = await populated(gitdir);
    await rm(path.dirname(KeyIndex.indexFile(gitdir, 'main')), { recursive: true });
    const reopened = await openProvider(gitdir);
    expect(await snapshotOf(reopened, keys)).toEqual(answer);
    await readFile(KeyIndex.indexFile(gitdir, 'main')); // and written again
  });

  it('catches up from a stale file by replaying only what it misses', async () => {
    const gitdir = await tempRepo();
    const { keys, answer } = await populated(gitdir);
    const file = KeyIndex.indexFile(gitdir, 'main');
    const lines = (await readFile(file, 'utf8')).split('\n');
    await writeFile(file, lines.slice(0, 6).join('\n') + '\n' + lines[6]!.slice(0, 20)); // and a torn last line
    const reopened = await openProvider(gitdir);
    expect(await snapshotOf(reopened, keys)).toEqual(answer);
  });

  it('is rebuilt when its file is garbage', async () => {
    const gitdir = await tempRepo();
    const { keys, answer } = await populated(gitdir);
    await truncate(KeyIndex.indexFile(gitdir, 'main'), 10);
    expect(await snapshotOf(await openProvider(gitdir), keys)).toEqual(answer);
  });

  it('finds the oldest, a middle and the newest of many versions by id, also after reopening and forgetting', async () => {
    const gitdir = await tempRepo();
    // Past SCAN_LIMIT versions the index looks a version up by id instead of scanning the history.
    const many = SCAN_LIMIT + 8;
    const writeVersions = async (provider: GitProvider, count: number, tag: string) => {
      const ids: string[] = [];
      for (let i = 0; i < count; i++) ids.push((await provider.createVersion('long', `${tag} ${i}`, { message: `${tag} ${i}` })).versionId!);
      return ids;
    };
    const expectVersions = async (provider: GitProvider, ids: string[], tag: string) => {
      for (const i of [0, Math.floor(ids.length / 2), ids.length - 1]) expect(await readText(provider, 'long', ids[i])).toBe(`${tag} ${i}`);
    };
    const provider = await openProvider(gitdir);
    const other = await provider.write('other', 'another key');
    const first = await writeVersions(provider, many, 'first');
    await expectVersions(provider, first, 'first');
    const [added] = await writeVersions(provider, 1, 'added');
    expect(await readText(provider, 'long', added)).toBe('added 0');
    await expect(provider.read('long', { versionId: other.versionId })).rejects.toBeInstanceOf(NotFoundError);
    await provider.close();

    const reopened = await openProvider(gitdir);
    await expectVersions(reopened, first, 'first');
    await reopened.delete('long', { allVersions: true });
    const second = await writeVersions(reopened, many, 'second');
    await expectVersions(reopened, second, 'second');
    for (const forgotten of [first[0], first.at(-1), added]) {
      await expect(reopened.read('long', { versionId: forgotten })).rejects.toBeInstanceOf(NotFoundError);
    }
  });

  it('keeps the event loop turning while it catches up on a long history', async () => {
    const gitdir = await tempRepo();
    const writer = await openProvider(gitdir);
    const reader = await openProvider(gitdir);
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => writer.write(`bulk/${batch * 100 + i}`, `v${i}`)));
    }
    let longest = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 5);
    const started = performance.now();
    try {
      await reader.stat('bulk/0'); // replays the writer's 1,000 commits
    } finally {
      clearInterval(timer);
    }
    const took = performance.now() - started;
    expect(longest).toBeLessThan(took / 4);
  }, 60_000);

  it('follows the branch when its history is rewritten', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const v1 = await provider.write('k', 'one');
    await provider.write('k', 'two');
    await git(gitdir, ['update-ref', 'refs/heads/main', v1.versionId!]);
    expect(await allVersionIds(provider, 'k')).toEqual([v1.versionId]);
    expect(await readText(provider, 'k')).toBe('one');
  });
});

describe('repository maintenance', () => {
  it('keeps reading old versions after git gc packs every object', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    const v1 = await provider.write('packed', 'one');
    await provider.write('packed', 'two');
    await git(gitdir, ['gc', '--quiet', '--prune=now']);
    expect(await readText(provider, 'packed', v1.versionId)).toBe('one');
    await provider.write('packed', 'three');
    const reopened = await openProvider(gitdir);
    await rm(path.dirname(KeyIndex.indexFile(gitdir, 'main')), { recursive: true });
    expect(await allVersionIds(await openProvider(gitdir), 'packed')).toEqual(await allVersionIds(reopened, 'packed'));
    await run('git', [`--git-dir=${gitdir}`, 'fsck', '--strict']);
  });

  it('writes an object again that git gc pruned after a failed write left it unreachable', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    await provider.write('k', 'v1');
    // The blob is written before the commit; the stale ifMatch then leaves it unreachable, and gc deletes it.
    await expect(provider.write('k', 'report body', { ifMatch: 'stale-etag' })).rejects.toBeInstanceOf(PreconditionFailedError);
    await git(gitdir, ['gc', '--quiet', '--prune=now']);
    await provider.write('doc', 'report body');
    expect(await readText(provider, 'doc')).toBe('report body');
    await run('git', [`--git-dir=${gitdir}`, 'fsck', '--strict']);
  });

  it('uses the .git of an existing clone and leaves its work tree alone', async () => {
    const dir = await tempRepo();
    await run('git', ['init', '-q', '-b', 'main', dir]);
    await writeFile(path.join(dir, 'untracked.txt'), 'mine');
    const provider = await openProvider(dir);
    await provider.write('stored', 'in git only');
    expect(await readFile(path.join(dir, 'untracked.txt'), 'utf8')).toBe('mine');
    await expect(readFile(path.join(dir, 'stored~'))).rejects.toThrow();
    expect(await git(path.join(dir, '.git'), ['show', 'main:stored~'])).toBe('in git only');
  });

  it('reports commits, objects and size, and health', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    await provider.write('s/a', '12345');
    await provider.createVersion('s/a', '123', { message: 'shorter' });
    const stats = await provider.stats();
    expect(stats).toMatchObject({ kind: 'git', objects: 1, bytes: 3, versions: 2, detail: { commits: 3, branch: 'main' } });
    const countObjects = await git(gitdir, ['count-objects', '-v']);
    expect(stats.detail!.gitObjects).toBe(Number(/^count: (\d+)/m.exec(countObjects)![1]));
    expect(stats.detail!.repositoryBytes as number).toBeGreaterThan(0);
    expect(await provider.health()).toMatchObject({ status: 'ok' });
  });

  it('reports down when the branch points at a missing commit', async () => {
    const gitdir = await tempRepo();
    const provider = await openProvider(gitdir);
    await writeFile(path.join(gitdir, 'refs', 'heads', 'main'), `${'1'.repeat(40)}\n`);
    expect(await provider.health()).toMatchObject({ status: 'down' });
  });
});
