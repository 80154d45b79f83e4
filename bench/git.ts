/**
 * Git provider latencies (issue 3), each beside the git CLI doing the same thing to a copy of the same
 * repository in the same run:
 * - createVersion of a 1 KiB text at 10 commits and at 2,000 commits (target: p50 ≤ 25 ms, and at 2,000 commits
 *   ≤ 1.3× the 10-commit p50). CLI: the plumbing commit of one file (hash-object, update-index on a kept index,
 *   write-tree, commit-tree, update-ref): five processes, as a script committing without a work tree would.
 * - listVersions of a key with 20 versions in a 2,000-commit repository (target p50 ≤ 10 ms). CLI: `git log
 *   --format=%H -- <path>`; and, for reference, isomorphic-git's `log({ filepath })` that the index replaces.
 * - read at an old version (target p50 ≤ 5 ms). CLI: `git cat-file blob <version>:<path>`.
 * The 2,000-commit repository is 100 keys under `docs/` with 20 versions each. Objects and refs are not fsync'd on
 * either side (git's own default); a row with `DISK_FSYNC=true`, the store's default, shows what that adds.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as isogit from 'isomorphic-git';
import { GitProvider } from '../src/providers/git.js';
import { treePathOf } from '../src/providers/git-layout.js';
import { drain, latencyRow as row, machineName, measure, measurePair, type BenchResult, type BenchRow } from './report.js';

const run = promisify(execFile);
const KEYS = 100;
const VERSIONS_PER_KEY = 20;
const text = (i: number) => `${`line ${i} of a small text document\n`.repeat(30)}`.slice(0, 1024);

/** Commits like a script with no work tree: one file into the branch, through a kept index file. */
class CliCommitter {
  private readonly env: NodeJS.ProcessEnv;

  constructor(private readonly gitdir: string) {
    this.env = { ...process.env, GIT_INDEX_FILE: path.join(gitdir, 'bench-index'), GIT_AUTHOR_NAME: 'Bench', GIT_AUTHOR_EMAIL: 'b@x', GIT_COMMITTER_NAME: 'Bench', GIT_COMMITTER_EMAIL: 'b@x' };
  }

  private async git(args: string[], input?: string): Promise<string> {
    const child = run('git', [`--git-dir=${this.gitdir}`, ...args], { env: this.env });
    if (input !== undefined) child.child.stdin?.end(input);
    return (await child).stdout.trim();
  }

  async prepare(): Promise<void> {
    await this.git(['read-tree', 'main']);
  }

  async commit(treePath: string, content: string, message: string): Promise<void> {
    const blob = await this.git(['hash-object', '-w', '--stdin'], content);
    await this.git(['update-index', '--add', '--cacheinfo', `100644,${blob},${treePath}`]);
    const tree = await this.git(['write-tree']);
    const commit = await this.git(['commit-tree', tree, '-p', 'main', '-m', message]);
    await this.git(['update-ref', 'refs/heads/main', commit]);
  }
}

async function readWhole(provider: GitProvider, key: string, versionId?: string): Promise<void> {
  await drain((await provider.read(key, versionId ? { versionId } : {})).body);
}

/** createVersion into `provider` beside the CLI committing into a copy of its repository. */
async function createVersionPair(provider: GitProvider, repo: string, dir: string, label: string, iterations: number) {
  const copy = path.join(dir, `cli-${label}`);
  await cp(repo, copy, { recursive: true });
  const cli = new CliCommitter(copy);
  await cli.prepare();
  return measurePair(
    (i) => cli.commit(treePathOf(`docs/${i % KEYS}`), text(i + 7), `cli ${i}`),
    (i) => provider.createVersion(`docs/${i % KEYS}`, text(i + 7), { message: `edit ${i}`, author: { name: 'Bench', email: 'b@x' } }),
    iterations,
  );
}

export async function runGitBench(): Promise<BenchResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-bench-git-'));
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  try {
    // Warm the JIT on a scratch store first, or the first case measured pays for it.
    const scratch = await GitProvider.open({ repoPath: path.join(dir, 'scratch') });
    for (let i = 0; i < 200; i++) await scratch.createVersion(`docs/${i % 10}`, text(i), { message: `warm ${i}` });
    for (let i = 0; i < 200; i++) await readWhole(scratch, `docs/${i % 10}`);
    await scratch.close();

    // ---- 10 commits ----
    const small = path.join(dir, 'small');
    const smallStore = await GitProvider.open({ repoPath: small });
    for (let i = 0; i < 9; i++) await smallStore.write(`docs/${i}`, text(i));
    const at10 = await createVersionPair(smallStore, small, dir, 'small', 50);
    await smallStore.close();
    rows.push(row('git createVersion 1KiB @10 commits', at10.ours, 'git CLI plumbing commit', at10.baseline, { text: 'p50 ≤ 25 ms', pass: at10.ours.p50Ms <= 25 }));

    // ---- 2,000 commits ----
    const big = path.join(dir, 'big');
    const bigStore = await GitProvider.open({ repoPath: big });
    const built = Date.now();
    for (let round = 0; round < VERSIONS_PER_KEY; round++) {
      // All keys of a round at once: they queue up and are committed as one chain (still one commit each).
      await Promise.all(Array.from({ length: KEYS }, (_, key) => bigStore.createVersion(`docs/${key}`, text(round * KEYS + key), { message: `round ${round}` })));
    }
    const commits = (await bigStore.stats()).detail!.commits as number;
    notes.push(`built ${commits} commits (${KEYS} keys × ${VERSIONS_PER_KEY} versions) in ${((Date.now() - built) / 1000).toFixed(1)} s through the provider (concurrent writes, chained commits)`);

    const oldest = new Map<number, string>();
    for (let key = 0; key < KEYS; key++) {
      const versions = (await bigStore.listVersions(`docs/${key}`)).items;
      oldest.set(key, versions.at(-1)!.versionId);
    }
    const listPair = await measurePair(
      (i) => run('git', [`--git-dir=${big}`, 'log', '--format=%H', '--', treePathOf(`docs/${i % KEYS}`)]),
      (i) => bigStore.listVersions(`docs/${i % KEYS}`),
      40,
    );
    rows.push(row('git listVersions (20 versions, 2,000 commits)', listPair.ours, 'git log -- <path>', listPair.baseline, { text: 'p50 ≤ 10 ms', pass: listPair.ours.p50Ms <= 10 }));

    const isoLog = await measure(
      (i) => isogit.log({ fs, gitdir: big, ref: 'main', filepath: treePathOf(`docs/${i % KEYS}`), cache: {} }),
      3,
      0,
    );
    rows.push(row('  ref: isomorphic-git log({ filepath })', isoLog, 'git log -- <path>', listPair.baseline));

    const readPair = await measurePair(
      (i) => run('git', [`--git-dir=${big}`, 'cat-file', 'blob', `${oldest.get(i % KEYS)}:${treePathOf(`docs/${i % KEYS}`)}`]),
      (i) => readWhole(bigStore, `docs/${i % KEYS}`, oldest.get(i % KEYS)),
      40,
    );
    rows.push(row('git read 1KiB at an old version', readPair.ours, 'git cat-file blob', readPair.baseline, { text: 'p50 ≤ 5 ms', pass: readPair.ours.p50Ms <= 5 }));

    const at2000 = await createVersionPair(bigStore, big, dir, 'big', 50);
    rows.push(
      row('git createVersion 1KiB @2,000 commits', at2000.ours, 'git CLI plumbing commit', at2000.baseline, {
        text: `p50 ≤ 25 ms and ≤ 1.3× @10 (${(at2000.ours.p50Ms / at10.ours.p50Ms).toFixed(2)}×)`,
        pass: at2000.ours.p50Ms <= 25 && at2000.ours.p50Ms <= 1.3 * at10.ours.p50Ms,
      }),
    );
    await bigStore.close();

    // ---- cold start and the store's default durability ----
    const reopen = await measure(
      async () => {
        await rm(path.join(big, 'kyozo', 'index'), { recursive: true, force: true });
        await (await GitProvider.open({ repoPath: big })).close();
      },
      2,
      0,
    );
    const warm = await measure(async () => (await GitProvider.open({ repoPath: big })).close(), 3, 1);
    rows.push(row('git open, index rebuilt from 2,000 commits', reopen, 'open with index file', warm));

    const durable = await GitProvider.open({ repoPath: big, fsync: true });
    const fsynced = await measure((i) => durable.createVersion(`docs/${i % KEYS}`, text(i), { message: `durable ${i}` }), 30);
    await durable.close();
    rows.push(row('git createVersion 1KiB @2,000, DISK_FSYNC=true', fsynced, 'same, no fsync', at2000.ours));
    notes.push('ratio = ours / baseline p50; the CLI spawns a process per plumbing step, the provider commits in-process');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return { suite: 'git', machine: machineName(), rows, notes };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { formatTable } = await import('./report.js');
  console.log(formatTable(await runGitBench()));
}
