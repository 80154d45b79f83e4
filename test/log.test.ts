/** The service's logger outlives its stdout: a closed terminal or a full disk stops the logging, not the process. */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

describe('logging to a stdout that refuses writes', () => {
  it('stops logging and lets the process go on (a closed terminal answers EIO; /dev/full answers ENOSPC)', async () => {
    const full = openSync('/dev/full', 'w');
    try {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/log-to-stdout.ts')], {
        stdio: ['ignore', full, 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      clearTimeout(killer);
      expect(stderr).toContain('still running');
      expect(code).toBe(0);
    } finally {
      closeSync(full);
    }
  });
});
