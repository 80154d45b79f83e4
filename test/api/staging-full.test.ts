/**
 * A PUT whose body cannot be staged because the staging store is full, while the target store has room: staging
 * drains by itself as jobs finish and cleanup runs, so the answer is 503 SERVICE_UNAVAILABLE with Retry-After,
 * naming the staging area (before session 19: 507 STORAGE_FULL "the disk is full", the contract's "this store is
 * full, do not retry"). Needs root (a 600 KiB tmpfs mounted over <STORAGE_ROOT_DIR>/.staging); skipped otherwise.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestService, type TestService } from '../support/service.js';

const TOKEN = 'staging-full-token-0123456789';
const auth = { Authorization: `Bearer ${TOKEN}` };
const root = mkdtempSync(path.join(os.tmpdir(), 'kyozo-staging-full-'));
const staging = path.join(root, '.staging');
mkdirSync(staging);
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', staging], { stdio: 'ignore' });
  mounted = true;
} catch {
  console.warn('staging-full: cannot mount a tmpfs here; skipped');
}
let s: TestService;

describe.skipIf(!mounted)('the staging store full', () => {
  beforeAll(async () => {
    s = await startTestService('staging-full', { API_TOKENS: TOKEN, STORAGE_ROOT_DIR: root });
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${path.join(staging, 'filler')}`, 'bs=1k', 'count=10000'], { stdio: 'ignore' });
    } catch {
      // dd stops at ENOSPC: the tmpfs is full now
    }
  });
  afterAll(async () => {
    execFileSync('umount', [staging]);
    await s?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('a body over STAGING_INLINE_MAX is refused as the service being unavailable for now, not as the target store full', async () => {
    const ready = (await (await s.app.request('/ready', { headers: auth })).json()) as { staging: { status: string }; stores: { files: { status: string } } };
    expect(ready.staging.status).toBe('degraded');
    expect(ready.stores.files.status).toBe('ok');

    const response = await s.app.request('/v1/stores/files/objects/big', { method: 'PUT', headers: { ...auth, 'Content-Type': 'text/plain' }, body: 'y'.repeat(300 * 1024) });
    const text = await response.text();
    // Before session 19: 507 {"error":{"code":"STORAGE_FULL","message":"the disk is full"}}, no Retry-After.
    expect(response.status, text).toBe(503);
    expect(response.headers.get('retry-after')).not.toBeNull();
    expect(text).toMatch(/staging/i);
  });
});
