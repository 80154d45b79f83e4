/** `GET /v1/stores/:store/stats` walks a whole store: requests that overlap share walks instead of each making one. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import type { StorageProvider } from '../../src/providers/types.js';
import { interceptMethod } from '../support/intercept.js';
import { startTestService, type TestService } from '../support/service.js';

let service: TestService;
let walks = 0;

beforeAll(async () => {
  service = await startTestService('api-stats', {}, { worker: false });
});
afterAll(async () => {
  await service?.close();
});

describe('store stats', () => {
  it('twenty overlapping requests make two walks, and each answer counts what was written before it asked', async () => {
    const disk = service.deps.stores.get('files')!;
    const slow: StorageProvider = interceptMethod(disk, 'stats', (stats) => async () => {
      walks++;
      const counted = await stats();
      await new Promise((resolve) => setTimeout(resolve, 100)); // a long walk: requests pile up behind it
      return counted;
    });
    const app = createApp({ ...service.deps, stores: new Map([['files', slow]]) });
    const stats = async () => (await (await app.request('/v1/stores/files/stats')).json()) as { objects: number };

    const first = stats();
    await new Promise((resolve) => setTimeout(resolve, 20)); // the first walk is under way
    await disk.write('counted/late', 'written after the first walk began');
    const later = await Promise.all(Array.from({ length: 20 }, stats));

    expect(walks).toBe(2);
    expect((await first).objects).toBe(0);
    expect(later.map((answer) => answer.objects)).toEqual(Array(20).fill(1));
  });
});
