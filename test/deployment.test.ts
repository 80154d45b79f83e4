/** What the deployment files promise matches the code: the Node the source needs, the time a container gets to stop. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DRAIN_MS } from '../src/api/server.js';
import { loadConfig } from '../src/config.js';
import { SHUTDOWN_GRACE_MS } from '../src/lifecycle.js';

const root = path.resolve(import.meta.dirname, '..');
/** What Docker waits between SIGTERM and SIGKILL when a service does not say. */
const DOCKER_DEFAULT_GRACE_MS = 10_000;

describe('deployment files', () => {
  it('package.json asks for Node 20.12 or newer: src/api/auth.ts and src/providers/body.ts use crypto.hash', async () => {
    const { engines } = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { engines: { node: string } };
    const [major = 0, minor = 0] = /^>=(\d+)(?:\.(\d+))?/.exec(engines.node)!.slice(1).map(Number);
    expect(major > 20 || (major === 20 && minor >= 12), engines.node).toBe(true);
  });

  it('docker-compose lets web and worker finish their graceful shutdown before Docker kills them', async () => {
    const compose = await readFile(path.join(root, 'docker-compose.yml'), 'utf8');
    const graceMs = (service: string) => {
      const block = compose.split(/^ {2}(?=\S)/m).find((text) => text.startsWith(`${service}:`)) ?? '';
      const seconds = /^\s+stop_grace_period: (\d+)s$/m.exec(block)?.[1];
      return seconds === undefined ? DOCKER_DEFAULT_GRACE_MS : Number(seconds) * 1000;
    };
    expect(graceMs('web')).toBeGreaterThanOrEqual(DRAIN_MS + SHUTDOWN_GRACE_MS);
    expect(graceMs('worker')).toBeGreaterThanOrEqual(loadConfig({}).workers.shutdownTimeoutMs + SHUTDOWN_GRACE_MS);
  });
});
