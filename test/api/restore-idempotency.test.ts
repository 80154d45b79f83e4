/**
 * A restore (of a version, or of a backup) repeated with its Idempotency-Key while its job is still kept finds that
 * job — as a copy repeated after its source went does (README "Copies") — rather than a 404 from the check of the
 * version or manifest that runs before the enqueue. Found by the session 19 review of the job API.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestService, type TestService } from '../support/service.js';

const TOKEN = 'restore-idempotency-token-0123456789';
const auth = { Authorization: `Bearer ${TOKEN}` };
let s: TestService;
beforeAll(async () => {
  s = await startTestService('restore-idempotency', { API_TOKENS: TOKEN, STORES: 'files:disk,mem:ram,vault:ram', BACKUP_STORE: 'vault' });
});
afterAll(async () => {
  await s?.close();
});
const req = (path: string, init: RequestInit & { headers?: Record<string, string> } = {}) =>
  s.app.request(path, { ...init, headers: { ...auth, ...(init.headers ?? {}) } });

describe('Idempotency-Key on a restore', () => {
  it('a repeat after the restored version was deleted answers the first job, not 404', async () => {
    const v1 = (await (await req('/v1/stores/files/objects/doc/versions?wait=true', { method: 'POST', body: 'one' })).json()) as { versionId: string };
    expect((await req('/v1/stores/files/objects/doc/versions?wait=true', { method: 'POST', body: 'two' })).status).toBe(200);
    const restore = `/v1/stores/files/objects/doc/versions/${encodeURIComponent(v1.versionId)}/restore?wait=true`;
    const first = await req(restore, { method: 'POST', headers: { 'Idempotency-Key': 'restore-1' } });
    expect(first.status).toBe(200);
    const restored = await first.json();
    // The client's connection broke before it read the answer; meanwhile the key's versions are deleted.
    expect((await req('/v1/stores/files/objects/doc?allVersions=true&wait=true', { method: 'DELETE' })).status).toBe(200);

    const repeat = await req(restore, { method: 'POST', headers: { 'Idempotency-Key': 'restore-1' } });
    // Before session 19: 404 {"error":{"code":"NOT_FOUND","message":"no version \"<v1>\" of \"doc\""}}, the job kept.
    expect(repeat.status, await repeat.clone().text()).toBe(200);
    expect(await repeat.json()).toEqual(restored);
  });

  it('a restore-backup repeated after its manifest was pruned answers the first job, not 404', async () => {
    expect((await req('/v1/stores/files/objects/kept?wait=true', { method: 'PUT', body: 'backed up' })).status).toBe(200);
    const backup = await req('/v1/maintenance/backup?wait=true', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ store: 'files' }) });
    const { result } = (await backup.json()) as { result: { manifest: string } };
    const body = JSON.stringify({ manifest: result.manifest, store: 'mem' });
    const restore = (idempotencyKey: string) =>
      req('/v1/maintenance/restore-backup?wait=true', { method: 'POST', headers: { 'Content-Type': 'application/json', 'Idempotency-Key': idempotencyKey }, body });
    const first = await restore('restore-backup-1');
    expect(first.status).toBe(200);
    const restored = await first.json();
    // Retention pruned the manifest before the client, whose answer was lost, asked again.
    await s.deps.stores.get('vault')!.delete(result.manifest, { allVersions: true });

    const repeat = await restore('restore-backup-1');
    expect(repeat.status, await repeat.clone().text()).toBe(200);
    expect(await repeat.json()).toEqual(restored);
    // A new request (another key) for that manifest is refused as before.
    expect((await restore('restore-backup-2')).status).toBe(404);
  });
});
