/**
 * The repository a git store opens on disk: where its git directory is (a clone's `.git`, the directory a `.git`
 * file names, a bare repository, or a new one), what it refuses to open (shallow clones, borrowed objects, a
 * symbolic branch), and how much it holds.
 */
import { open, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError } from './errors.js';
import { initRepository } from './git-objects.js';

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * The git directory under `repoPath`: its `.git` when it is a clone, the directory a `.git` file names (a linked
 * worktree, a submodule), itself when bare, else a new bare one. A linked worktree's own git directory holds only
 * its HEAD and index: objects and refs are in the repository's, named by its `commondir` file.
 */
export async function locateGitdir(repoPath: string, branch: string): Promise<string> {
  const dotGit = path.join(repoPath, '.git');
  const found = await stat(dotGit).catch(() => undefined);
  if (found?.isFile()) return commonDir(await followGitFile(dotGit));
  if (await exists(path.join(dotGit, 'HEAD'))) return dotGit;
  if (!(await exists(path.join(repoPath, 'HEAD')))) await initRepository(repoPath, branch);
  return commonDir(repoPath);
}

/**
 * A shallow clone names parent commits it does not have, and a clone with alternates (`--shared`, `--reference`)
 * keeps objects in another repository, which this store's object reader does not look in: either would fail every
 * history walk as an outage. Refused at open, saying what to do.
 */
export async function refuseIncompleteRepository(gitdir: string): Promise<void> {
  if (await exists(path.join(gitdir, 'shallow'))) {
    throw new InvalidArgumentError(`${gitdir} is a shallow clone: make it whole first (git fetch --unshallow)`);
  }
  if (await exists(path.join(gitdir, 'objects', 'info', 'alternates'))) {
    throw new InvalidArgumentError(`${gitdir} borrows objects from another repository (objects/info/alternates): make it whole first (git repack -a -d, then remove the file)`);
  }
}

/**
 * A branch that is a symbolic ref (`git symbolic-ref refs/heads/current refs/heads/main`) would be replaced by a
 * commit id at the first commit (refs are renamed into place), leaving the branch it named behind: refused at open,
 * naming the branch to use instead.
 */
export async function refuseSymbolicBranch(gitdir: string, branch: string): Promise<void> {
  const ref = await readFile(path.join(gitdir, 'refs', 'heads', branch), 'utf8').catch(() => '');
  if (!ref.startsWith('ref: ')) return;
  const target = ref.slice('ref: '.length).trim();
  throw new InvalidArgumentError(`GIT_BRANCH "${branch}" is a symbolic ref to ${target}, which the store's commits would replace: set GIT_BRANCH to the branch it names`);
}

/** The directory a `.git` file points at (`gitdir: <path>`, relative to the file's directory). */
async function followGitFile(dotGit: string): Promise<string> {
  const match = /^gitdir: *(.+?)\s*$/m.exec(await readFile(dotGit, 'utf8'));
  if (!match) throw new InvalidArgumentError(`${dotGit} is a file without a "gitdir: <path>" line`);
  const gitdir = path.resolve(path.dirname(dotGit), match[1]!);
  if (!(await exists(path.join(gitdir, 'HEAD')))) throw new InvalidArgumentError(`${dotGit} points at ${gitdir}, which is no git directory`);
  return gitdir;
}

async function commonDir(gitdir: string): Promise<string> {
  const common = await readFile(path.join(gitdir, 'commondir'), 'utf8').catch(() => undefined);
  return common === undefined ? gitdir : path.resolve(gitdir, common.trim());
}

/** Objects (loose, and packed as counted by the pack indexes) and bytes on disk of the whole git directory. */
export async function repositoryUsage(gitdir: string): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  const walk = async (dir: string, inObjects: boolean): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    await Promise.all(
      entries.map(async (entry) => {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) return walk(full, inObjects || (dir === gitdir && entry.name === 'objects'));
        const { size } = await stat(full).catch(() => ({ size: 0 }));
        bytes += size;
        if (inObjects && /^[0-9a-f]{38}$/.test(entry.name)) objects++;
        if (inObjects && entry.name.endsWith('.idx')) {
          const packed = await packedObjectCount(full);
          objects += packed;
        }
      }),
    );
  };
  await walk(gitdir, false);
  return { objects, bytes };
}

/** A version-2 pack index ends its 256-entry fan-out table with the number of objects in the pack. */
async function packedObjectCount(idx: string): Promise<number> {
  const handle = await open(idx, 'r');
  try {
    const header = Buffer.alloc(8 + 256 * 4);
    await handle.read(header, 0, header.length, 0);
    if (header.readUInt32BE(0) !== 0xff744f63) return 0;
    return header.readUInt32BE(8 + 255 * 4);
  } finally {
    await handle.close();
  }
}
