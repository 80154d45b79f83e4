/**
 * What a process prints at start: a refused REDIS_URL names the variable and shows its value with any password
 * masked; log lines are JSON objects an aggregator can index (one value per key).
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { createS3Provider } from '../../src/providers/s3.js';

const PASSWORD = 'hunter2-Sekr1t';

function refusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    return (error as Error).message;
  }
  return 'accepted';
}

describe('a refused REDIS_URL', () => {
  it.each([
    `redis://:${PASSWORD}@cache:99999`,
    `redis://default:${PASSWORD}@cache:6379/x`,
    `redis:/:${PASSWORD}@cache:6379`, // a slash missing
    `redis:${PASSWORD}@cache:6379`, // both missing
    `rediss:/default:${PASSWORD}@cache:6380`,
  ])('%s: the message names REDIS_URL and not the password', (url) => {
    const message = refusal({ REDIS_URL: url });
    expect(message).toContain('REDIS_URL');
    expect(message).not.toContain(PASSWORD);
  });
});

describe('log lines', () => {
  it('an s3 store under the web process logs one `component` key per line, not two', async () => {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk, _enc, cb) {
        lines.push(...String(chunk).split('\n').filter(Boolean));
        cb();
      },
    });
    const log = createLogger('info', stream as never).child({ component: 'web' });
    const provider = await createS3Provider({ bucket: 'b', endpoint: 'http://127.0.0.1:9', region: 'us-east-1', versioning: 'explicit', name: 'media', log });
    await provider.close();
    const line = lines.find((l) => l.includes('s3 versioning mode'))!;
    expect(line).toBeDefined();
    expect(line.match(/"component":/g)?.length, line).toBe(1);
  });
});
