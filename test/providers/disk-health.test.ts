/**
 * The disk provider's health report and what its probe leaves behind. A store whose writes fail while its reads
 * work is `degraded`; the cases that need such a store mount one (a read-only bind mount, a tiny tmpfs), which needs
 * root: without it, or where mounting fails, they are skipped with the reason printed.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, type TestContext } from 'vitest';
import { DiskProvider } from '../../src/providers/disk.js';
import { PermissionDeniedError, StorageFullError } from '../../src/providers/errors.js';

/** Runs `mount` with `args`: undefined once mounted, else why not, for the tests to skip with. */
function mount(...args: string[]): string | undefined {
  if (process.getuid?.() !== 0) return 'mounting needs root';
  try {
    execFileSync('mount', args, { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    return `mount ${args.join(' ')} failed: ${(error as Error).message}`;
  }
}

function skipUnlessMounted(context: TestContext, unmounted: string | undefined): void {
  if (unmounted === undefined) return;
  console.warn(`skipped "${context.task.name}": ${unmounted}`);
  context.skip(unmounted);
}

async function readText(provider: DiskProvider, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of (await provider.read(key)).body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Health probe files anywhere below `dir`. */
async function probesBelow(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).filter((name) => path.basename(name).startsWith('.tmp-health-'));
}

describe('disk health', () => {
  let base: string;

  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'kyozo-disk-health-'));
  });

  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('is ok on a store it can read and write', async () => {
    const provider = new DiskProvider({ root: base, fsync: true });
    expect((await provider.health()).status).toBe('ok');
    expect(await probesBelow(base)).toEqual([]);
  });

  it('makes nothing in objects/ or versions/: their mtime is what keeps a cached listing valid', async () => {
    const provider = new DiskProvider({ root: base, fsync: true });
    await provider.write('k', 'v');
    const mtimes = async () => Promise.all(['objects', 'versions'].map(async (dir) => (await stat(path.join(base, dir))).mtimeMs));
    const before = await mtimes();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await provider.health()).status).toBe('ok');
    expect(await mtimes()).toEqual(before);
  });

  it('removeLeftovers removes health probes a crash left in objects/, versions/ or the root', async () => {
    const provider = new DiskProvider({ root: base, fsync: true });
    await provider.write('k', 'v');
    const hourAgo = new Date(Date.now() - 3600_000);
    for (const dir of ['', 'objects', 'versions']) {
      const probe = path.join(base, dir, '.tmp-health-0123456789ab');
      await writeFile(probe, '');
      await utimes(probe, hourAgo, hourAgo);
    }
    expect(await provider.removeLeftovers(60_000)).toBe(3);
    expect(await probesBelow(base)).toEqual([]);
    expect(await readText(provider, 'k')).toBe('v');
  });

  describe('with objects/ on a read-only mount and the root writable', () => {
    let provider: DiskProvider;
    let unmounted: string | undefined;

    beforeEach(async () => {
      provider = new DiskProvider({ root: base, fsync: true });
      await provider.write('k', 'v');
      const objects = path.join(base, 'objects');
      unmounted = mount('--bind', objects, objects);
      if (unmounted !== undefined) return;
      unmounted = mount('-o', 'remount,ro,bind', objects);
      if (unmounted !== undefined) execFileSync('umount', [objects]);
    });

    afterEach(() => {
      if (unmounted === undefined) execFileSync('umount', [path.join(base, 'objects')]);
    });

    it('is degraded, not ok: writes fail while reads work', async (context) => {
      skipUnlessMounted(context, unmounted);
      await expect(provider.write('k', 'new')).rejects.toBeInstanceOf(PermissionDeniedError);
      expect(await readText(provider, 'k')).toBe('v');
      const report = await provider.health();
      expect(report.status).toBe('degraded');
      expect(report.detail).toMatch(/EROFS.*objects/);
    });
  });

  describe('on a full disk', () => {
    let provider: DiskProvider;
    let unmounted: string | undefined;

    beforeEach(async () => {
      unmounted = mount('-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', base);
      if (unmounted !== undefined) return;
      const root = path.join(base, 'store');
      await mkdir(root);
      provider = new DiskProvider({ root, fsync: true });
      await provider.write('k', 'v');
      // Fills every free page; the file stays, however much of it was written.
      await writeFile(path.join(base, 'fill'), Buffer.alloc(1024 * 1024)).catch(() => {});
    });

    afterEach(() => {
      if (unmounted === undefined) execFileSync('umount', [base]);
    });

    it('is degraded: reads work, writes fail with StorageFullError', async (context) => {
      skipUnlessMounted(context, unmounted);
      await expect(provider.write('other', Buffer.alloc(64 * 1024))).rejects.toBeInstanceOf(StorageFullError);
      expect(await readText(provider, 'k')).toBe('v');
      expect((await provider.health()).status).toBe('degraded');
    });

    it('leaves no probe file behind, however often it is asked', async (context) => {
      skipUnlessMounted(context, unmounted);
      for (let i = 0; i < 5; i++) await provider.health();
      expect(await probesBelow(base)).toEqual([]);
    });
  });
});
