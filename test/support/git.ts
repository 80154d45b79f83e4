/**
 * Temporary repositories and git providers for tests: providers opened here are closed after each test, the
 * directories removed after the file.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach } from 'vitest';
import { GitProvider } from '../../src/providers/git.js';

export function gitFixture(name: string) {
  const temps: string[] = [];
  const open: GitProvider[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((provider) => provider.close()));
  });
  afterAll(async () => {
    await Promise.all(temps.map((dir) => rm(dir, { recursive: true, force: true })));
  });
  return {
    async tempRepo(): Promise<string> {
      const dir = await mkdtemp(path.join(os.tmpdir(), `kyozo-${name}-`));
      temps.push(dir);
      return dir;
    },
    async openProvider(repoPath: string, options: Partial<Parameters<typeof GitProvider.open>[0]> = {}): Promise<GitProvider> {
      const provider = await GitProvider.open({ repoPath, ...options });
      open.push(provider);
      return provider;
    },
  };
}
