/** The service's logger outlives its stdout: a closed terminal or a full disk stops the logging, not the process. */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createLogger, onceEvery } from '../src/log.js';
import { TEST_REDIS_URL } from './support/redis.js';

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

describe('logged Redis errors', () => {
  it("keep the failed command's name but not its arguments (a password, the URL-signing secret, a value)", async () => {
    const secret = `secret-${randomUUID()}`;
    const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0 });
    const lines: string[] = [];
    try {
      await redis.connect();
      // A real reply error from the server: SET with both XX and NX is a syntax error; ioredis attaches the command.
      const error = await redis.set(`log-test:${secret}`, secret, 'XX' as never, 'NX' as never).then(
        () => undefined,
        (caught: Error) => caught,
      );
      expect((error as { command?: { args?: unknown[] } } | undefined)?.command?.args).toContain(secret);
      const log = createLogger('info', { write: (line: string) => void lines.push(line) });
      log.error({ err: error }, 'direct');
      log.error({ err: new AggregateError([error], 'several') }, 'aggregated');
      log.error({ err: Object.assign(new Error('wrapped'), { reply: error }) }, 'nested');
      // Beside `err`, the second error of a run that lost its lock (`workers/worker.ts`).
      log.warn({ err: new Error('lock lost'), failure: error }, 'job run abandoned');
      // Logging changes nothing of the caller's errors: pino's serialized copy shares nested ones (EXECABORT's
      // `previousErrors` holds the queued commands' errors in an array).
      log.error({ err: Object.assign(new Error('EXECABORT'), { previousErrors: [error] }) }, 'exec failed');
      expect((error as { command?: { args?: unknown[] } }).command?.args).toContain(secret);
      log.error({ err: Object.assign(new Error('dated'), { at: new Date(0) }) }, 'dated');
    } finally {
      redis.disconnect();
    }
    expect(lines).toHaveLength(6);
    expect(JSON.parse(lines[3]!).failure.command).toEqual({ name: 'set' });
    expect(JSON.parse(lines[4]!).err.previousErrors[0].command).toEqual({ name: 'set' });
    expect(JSON.parse(lines[5]!).err.at).toBe('1970-01-01T00:00:00.000Z');
    for (const line of lines) expect(line).not.toContain(secret);
    expect(JSON.parse(lines[0]!).err.command).toEqual({ name: 'set' });
    expect(JSON.parse(lines[1]!).err.aggregateErrors[0].command).toEqual({ name: 'set' });
    expect(JSON.parse(lines[2]!).err.reply.command).toEqual({ name: 'set' });
  });
});

describe('logged errors with a cause', () => {
  it('keep their own message, with the cause beside it: a failure wrapping its store error says it once', () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (line: string) => void lines.push(line) });
    const storeError = new Error('"r3.md" already exists (the write was create-only)');
    log.error({ err: new Error(`PRECONDITION_FAILED: ${storeError.message}`, { cause: storeError }) }, 'job failed');
    const { err } = JSON.parse(lines[0]!) as { err: { message: string; cause: { message: string; stack: string } } };
    expect(err.message).toBe('PRECONDITION_FAILED: "r3.md" already exists (the write was create-only)');
    expect(err.cause.message).toBe('"r3.md" already exists (the write was create-only)');
    expect(err.cause.stack).toContain('log.test.ts');
  });

  it("scrub a cause's Redis command arguments as they scrub the error's own", () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (line: string) => void lines.push(line) });
    const redisError = Object.assign(new Error('ERR syntax error'), { command: { name: 'auth', args: ['the-password'] } });
    log.error({ err: new Error('cannot enqueue', { cause: redisError }) }, 'wrapped');
    expect(lines[0]).not.toContain('the-password');
    expect((JSON.parse(lines[0]!) as { err: { cause: { command: unknown } } }).err.cause.command).toEqual({ name: 'auth' });
  });
});

describe('onceEvery', () => {
  it('logs a key once per period, then says how many it left out; other keys stand alone', () => {
    let now = 0;
    const once = onceEvery(30_000, () => now);
    const logged: string[] = [];
    const log = (key: string) => once(key, (repeated) => logged.push(`${key} +${repeated}`));
    log('refused');
    log('refused');
    log('other');
    now = 29_999;
    log('refused');
    now = 30_000;
    log('refused');
    expect(logged).toEqual(['refused +0', 'other +0', 'refused +2']);
  });
});
