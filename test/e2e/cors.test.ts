/**
 * CORS in a real browser: a page served from one origin calls the API on another (another port), as a web app
 * would — with its bearer token when its origin is in CORS_ORIGINS, and through a signed URL from any origin.
 * Headless Chromium (Debian's, driven by playwright-core); runs when /usr/bin/chromium exists, says why otherwise.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { startTestService, quietLog, type TestService } from '../support/service.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const available = existsSync(CHROMIUM);
if (!available) console.log(`CORS browser test skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);

const TOKEN = 'cors-browser-token-0123456789abcdef';
let service: TestService;
let api: HttpServer;
let browser: Browser;
/** Two sites serving an empty page: the first is in CORS_ORIGINS, the second is not. */
const sites: http.Server[] = [];
let listed: string;
let unlisted: string;

async function site(): Promise<string> {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end('<!doctype html><title>app</title>'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  sites.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  if (!available) return;
  service = await startTestService('cors-browser', { API_TOKENS: TOKEN, STORES: 'files:disk' });
  [listed, unlisted] = [await site(), await site()];
  const config = { ...service.deps.config, corsOrigins: [listed] };
  api = await listen(createApp({ ...service.deps, config }), { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  await browser?.close();
  await api?.close();
  await Promise.all(sites.map((server) => new Promise((resolve) => server.close(resolve))));
  await service?.close();
});

async function pageAt(origin: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(origin);
  return page;
}

describe.skipIf(!available)('CORS in Chromium', () => {
  it('a page of a listed origin writes with its token (a preflighted PUT), then reads the object and its headers', async () => {
    const page = await pageAt(listed);
    const seen = await page.evaluate(
      async ({ api, token }) => {
        const url = `${api}/v1/stores/files/objects/from-page.txt`;
        const auth = { Authorization: `Bearer ${token}` };
        const put = await fetch(`${url}?wait=true`, { method: 'PUT', body: 'written by a page', headers: { ...auth, 'Content-Type': 'text/plain', 'X-Meta-Owner': 'ada' } });
        const get = await fetch(url, { headers: auth });
        const denied = await fetch(url, { headers: { Authorization: 'Bearer wrong-token-of-some-length' } });
        return {
          put: put.status,
          etag: get.headers.get('ETag'),
          owner: get.headers.get('X-Meta-Owner'),
          text: await get.text(),
          denied: denied.status,
          deniedCode: ((await denied.json()) as { error: { code: string } }).error.code,
        };
      },
      { api: api.url, token: TOKEN },
    );
    expect(seen).toMatchObject({ put: 200, owner: 'ada', text: 'written by a page', denied: 401, deniedCode: 'UNAUTHORIZED' });
    expect(seen.etag).toMatch(/^"[0-9a-f]{64}"$/);
  });

  it('a page of another origin is stopped by the browser, but may upload to a signed URL', async () => {
    const signed = service.deps.signer.sign({ method: 'PUT', store: 'files', key: 'signed-from-page.txt', expires: Math.floor(Date.now() / 1000) + 60 });
    const page = await pageAt(unlisted);
    const seen = await page.evaluate(
      async ({ api, token, signed }) => {
        const blocked = await fetch(`${api}/v1/stores`, { headers: { Authorization: `Bearer ${token}` } }).then(
          (response) => `answered ${response.status}`,
          (error: Error) => error.name,
        );
        const upload = await fetch(`${api}${signed}&wait=true`, { method: 'PUT', body: 'uploaded by a page', headers: { 'Content-Type': 'text/plain' } });
        return { blocked, upload: upload.status, etag: upload.headers.get('ETag') };
      },
      { api: api.url, token: TOKEN, signed },
    );
    expect(seen.blocked).toBe('TypeError'); // "Failed to fetch": no Access-Control-Allow-Origin for it
    expect(seen.upload).toBe(200);
    const stored = await service.app.request('/v1/stores/files/objects/signed-from-page.txt', { headers: { Authorization: `Bearer ${TOKEN}` } });
    expect(await stored.text()).toBe('uploaded by a page');
  });
});
