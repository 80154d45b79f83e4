/**
 * /metrics label cardinality: 5,000 requests with random paths, methods (all Node's parser takes), store names, keys,
 * job ids and query strings over real HTTP must not grow the series without bound.
 */
import { randomBytes } from 'node:crypto';
import { METHODS, request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seriesOf, startObsService, type ObsService } from './support.js';

const TOKEN = 'review-obs-token-0123456789';
let service: ObsService;

beforeAll(async () => {
  service = await startObsService('obs-card', { API_TOKENS: TOKEN }, { worker: false });
});
afterAll(async () => {
  await service?.close();
});

const rand = () => randomBytes(6).toString('hex');

function send(url: string, method: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { method, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

function randomPath(): string {
  const shapes = [
    () => `/${rand()}`,
    () => `/${rand()}/${rand()}/${rand()}`,
    () => `/v1/${rand()}`,
    () => `/v1/stores/${rand()}/objects/${rand()}/${rand()}`,
    () => `/v1/stores/mem/objects/${rand()}`,
    () => `/v1/stores/${rand()}/stats`,
    () => `/v1/stores/${rand()}/objects?prefix=${rand()}`,
    () => `/v1/stores/mem/objects/${rand()}/versions/${rand()}/restore`,
    () => `/v1/jobs/${rand()}`,
    () => `/v1/signed/${rand()}/${rand()}?method=GET&expires=1&signature=${rand()}`,
    () => `/admin/queues/${rand()}`,
    () => `/admin/queues/api/queues/${rand()}/${rand()}`,
    () => `/metrics/${rand()}`,
    () => `/ready?${rand()}=1`,
    () => `/v1/maintenance/${rand()}`,
    () => `/v1/webhooks/${rand()}`,
  ];
  return shapes[Math.floor(Math.random() * shapes.length)]!();
}

describe('/metrics cardinality under random requests', () => {
  it('5,000 random requests add a bounded number of series', async () => {
    const base = service.server!.url;
    const scrape = async () => seriesOf(await (await fetch(`${base}/metrics`)).text());
    // warm: one of every route shape once
    const before = (await scrape()).filter((line) => line.startsWith('kyozo_http_request_duration_seconds_count'));
    const methods = METHODS.filter((m) => m !== 'CONNECT');
    const statuses = new Map<number, number>();
    for (let batch = 0; batch < 50; batch++) {
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          const method = methods[Math.floor(Math.random() * methods.length)]!;
          const headers: Record<string, string> = Math.random() < 0.7 ? { Authorization: `Bearer ${TOKEN}` } : {};
          const status = await send(`${base}${randomPath()}`, method, headers);
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
        }),
      );
    }
    const after = (await scrape()).filter((line) => line.startsWith('kyozo_http_request_duration_seconds_count'));
    const all = await scrape();
    console.log('statuses', Object.fromEntries(statuses));
    console.log('http series before', before.length, 'after', after.length, 'all series', all.length);
    const routes = new Set(after.map((line) => /route="([^"]*)"/.exec(line)?.[1]));
    const labelMethods = new Set(after.map((line) => /method="([^"]*)"/.exec(line)?.[1]));
    console.log('routes', [...routes]);
    console.log('methods', labelMethods.size, [...labelMethods].join(','));
    // None of the random parts (hex of 12) may appear as a label value.
    const leaked = all.filter((line) => /"[^"]*[0-9a-f]{12}[^"]*"/.test(line));
    expect(leaked.slice(0, 5)).toEqual([]);
    // Bounded: routes × methods × statuses is fixed by the code, far below one series per request.
    expect(after.length).toBeLessThan(1500);
  }, 300_000);
});
