/**
 * The git provider's answers to a review of its ref lock, restores racing forgets, forgets on branches, large bodies,
 * `.git` files and branch names (the reviewer's proofs are in .scratch/review-git/). Races are forced, not waited
 * for: node:fs/promises calls are held at chosen steps by spies, made visible to the provider's named imports by
 * `syncBuiltinESMExports`, until the other writer has reached its own step.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { mkdir, readFile, readdir, truncate, unlink, utimes, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { StorageError } from '../../src/providers/errors.js';
import { KeyIndex } from '../../src/providers/git-index.js';
import { treePathOf } from '../../src/providers/git-layout.js';
import { encodeObject, ObjectStore } from '../../src/providers/git-objects.js';
import { GIT_MAX_OBJECT_BYTES, GitProvider } from '../../src/providers/git.js';
import { gitFixture } from '../support/git.js';

const { tempRepo: tempDir, openProvider } = gitFixture('git-review');

const run = promisify(execFile);



async function git(args: string[], cwd?: string): Promise<string> {
  const { stdout } = await run('git', args, { cwd, env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: os.tmpdir() } });
  return stdout;
}

async function readText(provider: GitProvider, key: string, opts: { versionId?: string; branch?: string } = {}): Promise<string> {
  const { body } = await provider.read(key, opts);
  return Buffer.concat(await body.toArray()).toString('utf8');
}

/** The error `promise` rejects with. */
function failure(promise: Promise<unknown>): Promise<StorageError> {
  return promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (error: StorageError) => error,
  );
}

type Intercepted = 'stat' | 'rename' | 'readFile' | 'open';

/** `fs.promises[name]` replaced by what `fake` makes of the real one, for the provider's imports too. */
function intercept<K extends Intercepted>(name: K, fake: (real: (typeof fs.promises)[K]) => (typeof fs.promises)[K]): void {
  const real = fs.promises[name];
  vi.spyOn(fs.promises, name).mockImplementation(fake(real) as never);
  syncBuiltinESMExports();
}

/**
 * Records, in order, each finished `FileHandle.sync` (the store syncs directories with it, files with `datasync`) and
 * each rename's target. The calls themselves are the real ones.
 */
function recordSyncsAndRenames(): string[] {
  const events: string[] = [];
  intercept('open', (real) => (async (...args: Parameters<typeof fs.promises.open>) => {
    const handle = await real(...args);
    const sync = handle.sync.bind(handle);
    handle.sync = async () => {
      await sync();
      events.push(`sync ${String(args[0])}`);
    };
    return handle;
  }) as typeof fs.promises.open);
  intercept('rename', (real) => async (from, to) => {
    events.push(`rename ${String(to)}`);
    return real(from, to);
  });
  return events;
}

/** Resolves once `condition` holds, checking at every turn of the event loop (no timer, no deadline but the test's). */
async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setImmediate(resolve));
}

afterEach(() => {
  vi.restoreAllMocks();
  syncBuiltinESMExports();
});

describe('the ref lock', () => {
  /** A repository whose main is at `base`, commits `a` and `b` made on scratch branches from it, as two workers would. */
  async function twoCommitsOnOneBase() {
    const repo = await tempDir();
    const provider = await GitProvider.open({ repoPath: repo });
    await provider.write('before', 'acknowledged earlier');
    const base = (await git(['--git-dir', repo, 'rev-parse', 'main'])).trim();
    await provider.createBranch('scratch-a');
    await provider.createBranch('scratch-b');
    const a = (await provider.write('from-a', 'A', { branch: 'scratch-a' })).versionId!;
    const b = (await provider.write('from-b', 'B', { branch: 'scratch-b' })).versionId!;
    await provider.close();
    const target = path.join(repo, 'refs', 'heads', 'main');
    return { repo, base, a, b, target, lock: `${target}.lock` };
  }

  async function leaveStaleLock(lock: string): Promise<void> {
    await writeFile(lock, ''); // a process killed while it held the lock
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
  }

  it('a writer that found a stale lock never removes the live lock that replaced it', async () => {
    const { repo, base, a, b, target, lock } = await twoCommitsOnOneBase();
    await leaveStaleLock(lock);
    // The first writer to look at the stale lock is held right after its stat, until the other writer has removed
    // it, taken the lock and reached its rename onto the ref; that rename waits until the held writer has acted on
    // what it saw: taken the lock (its content is not the first writer's) or looked at the lock again (waiting).
    let heldOne = false;
    let renaming: Promise<void> | undefined;
    let statsWhileRenaming = 0;
    intercept('stat', (real) => (async (file: fs.PathLike, options?: fs.StatOptions) => {
      const result = await real(file, options);
      if (String(file) !== lock) return result;
      if (renaming) statsWhileRenaming++;
      if (!heldOne) {
        heldOne = true;
        await until(() => renaming !== undefined);
      }
      return result;
    }) as typeof fs.promises.stat);
    intercept('rename', (real) => async (from, to) => {
      if (String(to) !== target) return real(from, to);
      if (renaming) {
        await renaming.catch(() => {});
        return real(from, to);
      }
      const first = await readFile(lock, 'utf8');
      renaming = until(async () => {
        if (statsWhileRenaming > 0) return true;
        const now = await readFile(lock, 'utf8').catch(() => '');
        return now !== '' && now !== first;
      }).then(() => real(from, to));
      return renaming;
    });
    const [swapB, swapA] = await Promise.all(
      [b, a].map((commit) => new ObjectStore(repo, false).updateRef('refs/heads/main', commit, base).catch((error: Error) => error)),
    );
    vi.restoreAllMocks();
    syncBuiltinESMExports();

    const won = [swapA === true ? a : undefined, swapB === true ? b : undefined].filter(Boolean);
    expect(won).toHaveLength(1); // one writer acknowledged...
    expect((await readFile(target, 'utf8')).trim()).toBe(won[0]); // ...and the ref holds its commit
    for (const swap of [swapA, swapB]) if (swap !== true) expect(swap === false || (swap as StorageError).code === 'PROVIDER_UNAVAILABLE').toBe(true);
    const names = (await readdir(path.dirname(target))).filter((name) => name.startsWith('main.'));
    expect(names).toEqual([]); // no lock, and no lock put aside, left behind
    const provider = await openProvider(repo);
    expect((await provider.list()).items.map((item) => item.key)).toEqual(['before', won[0] === a ? 'from-a' : 'from-b']);
  });

  it('a writer whose lock was taken away neither renames into place nor removes the lock now at its path', async () => {
    const { repo, base, a, target, lock } = await twoCommitsOnOneBase();
    const foreign = `${'f'.repeat(40)}\n`;
    // While the writer compares the ref, its lock is moved away and another process takes the lock anew.
    let taken = false;
    intercept('readFile', (real) => (async (file: fs.PathLike, options?: unknown) => {
      if (String(file) === target && !taken) {
        taken = true;
        fs.renameSync(lock, path.join(repo, 'taken.lock'));
        fs.writeFileSync(lock, foreign, { flag: 'wx' });
      }
      return real(file, options as never);
    }) as typeof fs.promises.readFile);
    const error = await failure(new ObjectStore(repo, false).updateRef('refs/heads/main', a, base));
    vi.restoreAllMocks();
    syncBuiltinESMExports();

    expect(error.code).toBe('PROVIDER_UNAVAILABLE');
    expect((await readFile(target, 'utf8')).trim()).toBe(base);
    expect(await readFile(lock, 'utf8')).toBe(foreign);
  });
});

describe('durability with fsync (DISK_FSYNC)', () => {
  const synced = (events: string[]) => events.filter((event) => event.startsWith('sync ')).map((event) => event.slice('sync '.length));

  it('syncs the directory of every object a write adds before the branch ref is renamed onto it', async () => {
    const repo = await tempDir();
    const provider = await openProvider(repo, { fsync: true });
    await provider.write('before', 'x');
    const base = (await git(['--git-dir', repo, 'rev-parse', 'main'])).trim();
    const events = recordSyncsAndRenames();
    await provider.write('docs/a.md', 'hello');
    vi.restoreAllMocks();
    syncBuiltinESMExports();

    const added = (await git(['--git-dir', repo, 'rev-list', '--objects', 'main', `^${base}`])).split('\n').filter(Boolean);
    expect(added.length).toBeGreaterThanOrEqual(5); // content, record, commit, and trees along the paths
    const moved = events.indexOf(`rename ${path.join(repo, 'refs', 'heads', 'main')}`);
    expect(moved).toBeGreaterThan(0);
    const before = new Set(synced(events.slice(0, moved)));
    expect(added.map((line) => path.join(repo, 'objects', line.slice(0, 2))).filter((dir) => !before.has(dir))).toEqual([]);
    // And the ref's own directory after it, before the write is acknowledged: else a power cut could undo the commit.
    expect(synced(events.slice(moved))).toContain(path.join(repo, 'refs', 'heads'));
  });

  it('syncs each directory once per batch of objects, however many of them it holds', async () => {
    const repo = await tempDir();
    await git(['init', '-q', '--bare', repo]);
    const objects = Array.from({ length: 300 }, (_, i) => encodeObject('blob', Buffer.from(`object ${i}`)));
    const fanouts = new Set(objects.map((object) => path.join(repo, 'objects', object.oid.slice(0, 2))));
    expect(fanouts.size).toBeLessThan(objects.length);
    const events = recordSyncsAndRenames();
    await new ObjectStore(repo, true).write(objects);
    vi.restoreAllMocks();
    syncBuiltinESMExports();

    // `objects/` too: the fan-out directories were made by this batch.
    expect(synced(events).sort()).toEqual([...fanouts, path.join(repo, 'objects')].sort());
  });
});

describe('restoreVersion', () => {
  it('refuses a version that a delete with allVersions forgot after the restore looked it up', async () => {
    const provider = await openProvider(await tempDir());
    const secret = await provider.createVersion('doc', 'SECRET v1', { message: 'v1' });
    await provider.write('doc', 'v2');
    // The restore looks its source up first; the forget is queued meanwhile and commits before it.
    const restore = failure(provider.restoreVersion('doc', secret.versionId));
    await provider.delete('doc', { allVersions: true });
    expect((await restore).code).toBe('NOT_FOUND');
    expect((await failure(provider.stat('doc'))).code).toBe('NOT_FOUND');
    expect((await provider.listVersions('doc')).items).toEqual([]);
  });

  it('refuses a version that a delete with allVersions earlier in the same chain of commits forgot', async () => {
    const provider = await openProvider(await tempDir());
    const secret = await provider.createVersion('doc', 'SECRET v1', { message: 'v1' });
    // A write held at its fence keeps the commit lock, so the forget and the restore queue up and commit together.
    let release!: () => void;
    const held = provider.write('other', 'x', { fence: () => new Promise<void>((resolve) => (release = resolve)) });
    await until(() => release !== undefined);
    const restore = failure(provider.restoreVersion('doc', secret.versionId));
    const forget = provider.delete('doc', { allVersions: true });
    await until(() => (provider as unknown as { queue: unknown[] }).queue.length === 2);
    release();
    await Promise.all([held, forget]);
    expect((await restore).code).toBe('NOT_FOUND');
    expect((await failure(provider.stat('doc'))).code).toBe('NOT_FOUND');
    expect((await provider.listVersions('doc')).items).toEqual([]);
  });
});

describe('a version forgotten on a branch', () => {
  it('is not served, diffed or restored through another branch', async () => {
    const provider = await openProvider(await tempDir());
    await provider.createBranch('feature');
    const secret = await provider.createVersion('secret.txt', 'password=hunter2\n', { message: 'oops', branch: 'feature' });
    await provider.delete('secret.txt', { allVersions: true, branch: 'feature' });

    expect((await failure(provider.read('secret.txt', { versionId: secret.versionId }))).code).toBe('NOT_FOUND');
    expect((await failure(provider.stat('secret.txt', { versionId: secret.versionId }))).code).toBe('NOT_FOUND');
    expect((await failure(provider.diff('secret.txt', secret.versionId, 'feature'))).code).toBe('NOT_FOUND');
    expect((await failure(provider.restoreVersion('secret.txt', secret.versionId))).code).toBe('NOT_FOUND');
    expect((await failure(provider.stat('secret.txt'))).code).toBe('NOT_FOUND');
  });

  it('is still served through a branch that has not forgotten it', async () => {
    const provider = await openProvider(await tempDir());
    const v1 = await provider.write('k', 'one');
    await provider.createBranch('forgetful');
    await provider.delete('k', { allVersions: true, branch: 'forgetful' });
    expect(await readText(provider, 'k', { versionId: v1.versionId })).toBe('one');
    expect((await failure(provider.read('k', { versionId: v1.versionId, branch: 'forgetful' }))).code).toBe('NOT_FOUND');
    // a version only another branch has is still served by its id, as before
    await provider.createBranch('side');
    const onSide = await provider.write('k', 'two', { branch: 'side' });
    expect(await readText(provider, 'k', { versionId: onSide.versionId })).toBe('two');
    expect(await readText(provider, 'k', { versionId: onSide.versionId, branch: 'forgetful' })).toBe('two');
  });
});

describe('object size', () => {
  it('limits a body to 1 GiB by default, refused as PAYLOAD_TOO_LARGE once a stream passes it', async () => {
    expect(GIT_MAX_OBJECT_BYTES).toBe(1024 ** 3);
    const provider = await openProvider(await tempDir());
    // One 16 MiB chunk given over and over: the test holds 16 MiB, whatever the stream's length.
    const chunk = Buffer.alloc(16 * 1024 * 1024, 1);
    async function* pastTheLimit() {
      for (let sent = 0; sent <= GIT_MAX_OBJECT_BYTES; sent += chunk.length) yield chunk;
      throw new Error('the stream was read past the limit');
    }
    const error = await failure(provider.write('big', Readable.from(pastTheLimit())));
    expect(error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(error.retryable).toBe(false);
  });

  it('refuses bodies over a smaller configured limit, whole or streamed, and commits nothing', async () => {
    const gitdir = await tempDir();
    const provider = await openProvider(gitdir, { maxObjectBytes: 1000 });
    await provider.write('fits', 'x'.repeat(1000));
    expect((await failure(provider.write('k', 'x'.repeat(1001)))).code).toBe('PAYLOAD_TOO_LARGE');
    const streamed = Readable.from([Buffer.alloc(600), Buffer.alloc(600)]);
    expect((await failure(provider.createVersion('k', streamed, { message: 'too big' }))).code).toBe('PAYLOAD_TOO_LARGE');
    expect((await provider.list()).items.map((item) => item.key)).toEqual(['fits']);
    expect((await failure(GitProvider.open({ repoPath: gitdir, maxObjectBytes: GIT_MAX_OBJECT_BYTES + 1 }))).code).toBe('INVALID_ARGUMENT');
  });

  it('answers a stored object too large to read whole with PAYLOAD_TOO_LARGE, not a retryable outage', async () => {
    const gitdir = await tempDir();
    const provider = await openProvider(gitdir);
    const written = await provider.write('big', 'small for now');
    // The loose object becomes a sparse file of 2 GiB: as large as git lets a blob be, without the disk space.
    const blob = (await git(['--git-dir', gitdir, 'rev-parse', `${written.versionId}:${treePathOf('big')}`])).trim();
    const file = path.join(gitdir, 'objects', blob.slice(0, 2), blob.slice(2));
    await unlink(file);
    await writeFile(file, '');
    await truncate(file, 2 ** 31);
    for (const read of [provider.read('big'), provider.read('big', { range: [0, 9] })]) {
      const error = await failure(read);
      expect(error.code).toBe('PAYLOAD_TOO_LARGE');
      expect(error.retryable).toBe(false);
    }
  });
});

describe('the repository a path names', () => {
  it('follows the .git file of a linked worktree to its repository and leaves the work tree alone', async () => {
    const dir = await tempDir();
    const clone = path.join(dir, 'clone');
    await git(['init', '-q', '-b', 'main', clone]);
    await git(['-c', 'user.name=u', '-c', 'user.email=u@x', 'commit', '-q', '--allow-empty', '-m', 'init'], clone);
    await git(['worktree', 'add', '-q', '-b', 'side', '../wt'], clone);
    const worktree = path.join(dir, 'wt');
    const provider = await openProvider(worktree);
    await provider.write('k', 'v');
    expect(await readdir(worktree)).toEqual(['.git']);
    expect(await git(['status', '--short'], worktree)).toBe('');
    expect(await git(['--git-dir', path.join(clone, '.git'), 'show', `main:${treePathOf('k')}`])).toBe('v');
  });

  it('follows a relative gitdir link (a submodule) and refuses a .git file that names no git directory', async () => {
    const dir = await tempDir();
    await git(['init', '-q', '--bare', '-b', 'main', path.join(dir, 'modules', 'sub')]);
    const work = path.join(dir, 'sub');
    await mkdir(work);
    await writeFile(path.join(work, '.git'), 'gitdir: ../modules/sub\n');
    const provider = await openProvider(work);
    await provider.write('k', 'v');
    expect(await git(['--git-dir', path.join(dir, 'modules', 'sub'), 'show', `main:${treePathOf('k')}`])).toBe('v');
    expect(await readdir(work)).toEqual(['.git']);

    const broken = path.join(dir, 'broken');
    await mkdir(broken);
    await writeFile(path.join(broken, '.git'), 'gitdir: ../nowhere\n');
    expect((await failure(GitProvider.open({ repoPath: broken }))).code).toBe('INVALID_ARGUMENT');
    expect(await readdir(broken)).toEqual(['.git']);
  });
});

describe('an existing clone (session 10)', () => {
  const author = ['-c', 'user.name=u', '-c', 'user.email=u@x'];

  it("never replaces the repository's own file with a key's directory: the write is PERMISSION_DENIED, others go on", async () => {
    const clone = path.join(await tempDir(), 'clone');
    await git(['init', '-q', '-b', 'main', clone]);
    await writeFile(path.join(clone, 'Makefile'), 'all:\n');
    await git(['add', 'Makefile'], clone);
    await git([...author, 'commit', '-q', '-m', 'project'], clone);
    const provider = await openProvider(clone);
    const [blocked, beside] = await Promise.allSettled([provider.write('Makefile/notes', 'n'), provider.write('notes', 'n')]);
    expect(blocked).toMatchObject({ status: 'rejected', reason: { code: 'PERMISSION_DENIED', retryable: false } });
    expect(beside.status).toBe('fulfilled');
    expect(await git(['show', 'main:Makefile'], clone)).toBe('all:\n');
    await expect(provider.stat('Makefile/notes')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('refuses a shallow clone and a clone borrowing objects (alternates) at open, saying what to do', async () => {
    const dir = await tempDir();
    const origin = path.join(dir, 'origin');
    await git(['init', '-q', '-b', 'main', origin]);
    for (const message of ['one', 'two']) await git([...author, 'commit', '-q', '--allow-empty', '-m', message], origin);
    await git(['clone', '-q', '--depth', '1', `file://${origin}`, path.join(dir, 'shallow')]);
    await git(['clone', '-q', '--shared', origin, path.join(dir, 'shared')]);
    const shallow = await failure(GitProvider.open({ repoPath: path.join(dir, 'shallow') }));
    expect(shallow).toMatchObject({ code: 'INVALID_ARGUMENT', retryable: false });
    expect(shallow.message).toMatch(/shallow clone: .*git fetch --unshallow/);
    const shared = await failure(GitProvider.open({ repoPath: path.join(dir, 'shared') }));
    expect(shared).toMatchObject({ code: 'INVALID_ARGUMENT', retryable: false });
    expect(shared.message).toMatch(/alternates/);
  });
});

describe('authors and diffs (session 10)', () => {
  it('an author name with U+2028 reads back the same in another process, so a retried version finds its own', async () => {
    const repo = await tempDir();
    const writer = await openProvider(repo);
    const other = await openProvider(repo); // opened first: it learns of the version from the commit
    const author = { name: 'Ada\u2028Lovelace', email: 'ada@example.com' };
    const made = await writer.createVersion('doc', 'v', { message: 'm', author });
    expect((await other.listVersions('doc')).items[0]).toMatchObject({ versionId: made.versionId, author });
  });

  it('diffs a file whose every line changed, 100,000 lines in one hunk', async () => {
    const provider = await openProvider(await tempDir());
    const lines = (tag: string) => Array.from({ length: 100_000 }, (_, i) => `${tag},${i}`).join('\n') + '\n';
    const first = await provider.createVersion('data.csv', lines('a'), { message: 'one' });
    await provider.createVersion('data.csv', lines('b'), { message: 'two' });
    const diff = await provider.diff('data.csv', first.versionId);
    expect(diff).toMatchObject({ additions: 100_000, deletions: 100_000 });
  });
});

describe('branch names', () => {
  it('refuses at open a GIT_BRANCH that is a symbolic ref, naming it, and leaves the ref as it was', async () => {
    const repo = await tempDir();
    await git(['init', '-q', '--bare', '-b', 'main', repo]);
    const env = { GIT_AUTHOR_NAME: 'u', GIT_AUTHOR_EMAIL: 'u@x', GIT_COMMITTER_NAME: 'u', GIT_COMMITTER_EMAIL: 'u@x' };
    const tree = execFileSync('git', ['--git-dir', repo, 'mktree'], { input: '', encoding: 'utf8' }).trim();
    const head = execFileSync('git', ['--git-dir', repo, 'commit-tree', tree, '-m', 'init'], { encoding: 'utf8', env: { ...process.env, ...env } }).trim();
    await git(['--git-dir', repo, 'update-ref', 'refs/heads/main', head]);
    await git(['--git-dir', repo, 'symbolic-ref', 'refs/heads/current', 'refs/heads/main']);
    await git(['--git-dir', repo, 'symbolic-ref', 'refs/heads/dangling', 'refs/heads/nowhere']); // open would make its first commit

    for (const [branch, target] of [['current', 'refs/heads/main'], ['dangling', 'refs/heads/nowhere']] as const) {
      const error = await failure(GitProvider.open({ repoPath: repo, branch }));
      expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', retryable: false });
      expect(error.message).toContain(`GIT_BRANCH "${branch}" is a symbolic ref to ${target}`);
      expect(await readFile(path.join(repo, 'refs', 'heads', branch), 'utf8')).toBe(`ref: ${target}\n`);
    }
    expect((await git(['--git-dir', repo, 'rev-parse', 'main'])).trim()).toBe(head);
  });

  it("refuses a write whose branch option names a symbolic ref, leaving the link and the branch it names as they were", async () => {
    const repo = await tempDir();
    const provider = await openProvider(repo);
    await provider.createBranch('side');
    await provider.write('k', 'on side', { branch: 'side' });
    const sideHead = (await git(['--git-dir', repo, 'rev-parse', 'side'])).trim();
    await git(['--git-dir', repo, 'symbolic-ref', 'refs/heads/alias', 'refs/heads/side']);
    const error = await failure(provider.write('k', 'through the alias', { branch: 'alias' }));
    expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', retryable: false });
    expect(error.message).toContain('symbolic ref to refs/heads/side');
    expect(await readFile(path.join(repo, 'refs', 'heads', 'alias'), 'utf8')).toBe('ref: refs/heads/side\n');
    expect((await git(['--git-dir', repo, 'rev-parse', 'side'])).trim()).toBe(sideHead);
  });

  it('refuses a name of 40 hexadecimal digits, which diff and createBranch would read as a commit id', async () => {
    const provider = await openProvider(await tempDir());
    const name = 'abcdef0123'.repeat(4);
    expect((await failure(provider.createBranch(name))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(provider.write('k', 'v', { branch: name }))).code).toBe('INVALID_ARGUMENT');
    await provider.createBranch('ABCDEF0123'.repeat(4)); // not a commit id: ids are lower case
  });
});

describe('a damaged repository (session 9)', () => {
  it('is down in health, and writes fail DATA_CORRUPTED at once instead of being retried as unavailable', async () => {
    const repoPath = await tempDir();
    const before = await openProvider(repoPath);
    await before.write('a', 'hello');
    await before.close();
    // Truncate the head commit's root tree, a loose object, as a torn write or a bad sector would leave it.
    const tree = (await run('git', ['--git-dir', repoPath, 'rev-parse', 'main^{tree}'])).stdout.trim();
    const file = path.join(repoPath, 'objects', tree.slice(0, 2), tree.slice(2));
    await fs.promises.chmod(file, 0o644);
    await writeFile(file, Buffer.from([0x78, 0x01]));

    const provider = await openProvider(repoPath);
    const health = await provider.health();
    expect(health.status).toBe('down');
    expect(health.detail).toContain(tree);
    await expect(provider.write('b', 'x')).rejects.toMatchObject({ code: 'DATA_CORRUPTED', retryable: false } satisfies Partial<StorageError>);
  });

  it('an object too large to inflate into memory is PAYLOAD_TOO_LARGE, as before, not damaged', async () => {
    const provider = await openProvider(await tempDir());
    await provider.write('big', 'stands in for an object of over 4 GiB');
    const tooLarge = Object.assign(new RangeError('Cannot create a Buffer larger than 4294967296 bytes'), { code: 'ERR_BUFFER_TOO_LARGE' });
    const inflate = vi.spyOn(zlib, 'inflateSync').mockImplementation(() => {
      throw tooLarge;
    });
    try {
      await expect(provider.read('big')).rejects.toMatchObject({ code: 'PAYLOAD_TOO_LARGE' } satisfies Partial<StorageError>);
    } finally {
      inflate.mockRestore();
    }
  });
});

describe('files committed by other means that are no key content (session 11)', () => {
  /** `git --git-dir <gitdir> ...` with `input` on stdin. */
  const gitIn = (gitdir: string, args: string[], input: string | Buffer = ''): string =>
    execFileSync('git', ['--git-dir', gitdir, ...args], {
      input,
      encoding: 'utf8',
      env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: os.tmpdir(), GIT_AUTHOR_NAME: 'cli', GIT_AUTHOR_EMAIL: 'c@x', GIT_COMMITTER_NAME: 'cli', GIT_COMMITTER_EMAIL: 'c@x' },
    });

  /** Commits main's tree plus `entry` (`ls-tree -z` format, NUL-terminated) by hand, as a user of the git CLI would. */
  function commitEntry(gitdir: string, entry: Buffer, message: string): void {
    const head = gitIn(gitdir, ['rev-parse', 'main']).trim();
    const tree = gitIn(gitdir, ['mktree', '-z'], Buffer.concat([Buffer.from(gitIn(gitdir, ['ls-tree', '-z', head])), entry])).trim();
    gitIn(gitdir, ['update-ref', 'refs/heads/main', gitIn(gitdir, ['commit-tree', tree, '-p', head, '-m', message]).trim()]);
  }

  it('a submodule entry where a key\'s content would be is no key, and the rest of the store works', async () => {
    const gitdir = await tempDir();
    const provider = await openProvider(gitdir);
    await provider.write('a', 'hello');
    commitEntry(gitdir, Buffer.from(`160000 commit ${'1234567890'.repeat(4)}\t${treePathOf('sub')}\0`), 'add a submodule');
    expect(await readText(provider, 'a')).toBe('hello');
    expect((await provider.list()).items.map((item) => item.key)).toEqual(['a']);
    await expect(provider.stat('sub')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await (await openProvider(gitdir)).list()).items.map((item) => item.key)).toEqual(['a']);
    // Nor is it replaced by a write of that key: it is the repository's own entry.
    await expect(provider.write('sub', 'x', { ifNoneMatch: '*' })).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    expect(gitIn(gitdir, ['ls-tree', 'main', treePathOf('sub')])).toMatch(/^160000 commit /);
  });

  it('a file too large to read whole, committed without a record, is no key, and the rest of the store works', async () => {
    const gitdir = await tempDir();
    const provider = await openProvider(gitdir);
    await provider.write('other', 'fine');
    const blob = gitIn(gitdir, ['hash-object', '-w', '--stdin'], 'stands in for a 2 GiB file').trim();
    commitEntry(gitdir, Buffer.from(`100644 blob ${blob}\t${treePathOf('big')}\0`), 'hand: add big');
    // The loose object becomes a sparse file of 2 GiB, as above.
    const file = path.join(gitdir, 'objects', blob.slice(0, 2), blob.slice(2));
    await unlink(file);
    await writeFile(file, '');
    await truncate(file, 2 ** 31);
    expect(await readText(provider, 'other')).toBe('fine');
    expect((await provider.list()).items.map((item) => item.key)).toEqual(['other']);
    expect((await provider.write('other', 'again')).etag).toBeDefined();
    expect((await (await openProvider(gitdir)).list()).items.map((item) => item.key)).toEqual(['other']);
  });

  it('refuses a branch that would clash with a packed one (a/b after git pack-refs, then a; and the reverse)', async () => {
    const gitdir = await tempDir();
    const provider = await openProvider(gitdir);
    await provider.write('k', 'x');
    await provider.createBranch('a/b');
    await provider.createBranch('c');
    gitIn(gitdir, ['pack-refs', '--all']);
    await expect(provider.createBranch('a')).rejects.toMatchObject({ code: 'PRECONDITION_FAILED', message: expect.stringMatching(/conflicts with the existing branch "a\/b"/) });
    await expect(provider.createBranch('c/d')).rejects.toMatchObject({ code: 'PRECONDITION_FAILED', message: expect.stringMatching(/"c"/) });
    expect((await provider.listBranches()).map((branch) => branch.name).sort()).toEqual(['a/b', 'c', 'main']);
    expect((await provider.createBranch('ab')).name).toBe('ab');
  });

  it("saves the index of a branch whose escaped name passes a file name's length (200 bytes of é; 240 escaped)", async () => {
    const gitdir = await tempDir();
    const provider = await openProvider(gitdir);
    await provider.write('k', 'x');
    for (const branch of ['é'.repeat(100), `${'é'.repeat(10)}${'b'.repeat(180)}`]) {
      await provider.createBranch(branch);
      await provider.write('k', 'on the branch', { branch });
      const file = KeyIndex.indexFile(gitdir, branch);
      expect(path.basename(file).length).toBeLessThan(230); // room for the name it is first written under
      expect((await readFile(file, 'utf8')).length).toBeGreaterThan(0);
    }
  });

  it('a file name that is not UTF-8 adds no version to the key its decoding would name (U+FFFD)', async () => {
    const gitdir = await tempDir();
    const provider = await openProvider(gitdir);
    await provider.write('\uFFFD', 'mine');
    const blob = gitIn(gitdir, ['hash-object', '-w', '--stdin'], 'foreign').trim();
    commitEntry(gitdir, Buffer.concat([Buffer.from(`100644 blob ${blob}\t`), Buffer.from([0xff, 0x7e, 0])]), 'add a latin-1 file');
    expect((await provider.listVersions('\uFFFD')).items.map((version) => version.message)).toEqual(['write \uFFFD']);
    expect(await readText(provider, '\uFFFD')).toBe('mine');
  });
});
