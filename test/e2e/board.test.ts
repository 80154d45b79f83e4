/**
 * Bull Board in a real browser: headless Chromium (Debian's, driven by playwright-core) signs in with an API token
 * and sees the project's queues. Runs when /usr/bin/chromium exists (`.ci/run` installs it); says why otherwise.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { startTestService, quietLog, type TestService } from '../support/service.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const available = existsSync(CHROMIUM);
if (!available) console.log(`board browser test skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);

const TOKEN = 'board-token-for-the-browser';
let service: TestService;
let server: HttpServer;
let browser: Browser;

beforeAll(async () => {
  if (!available) return;
  service = await startTestService('board', { API_TOKENS: TOKEN });
  server = await listen(createApp(service.deps), { host: '127.0.0.1', port: 0, apiTokens: [TOKEN] }, quietLog);
  await service.app.request('/v1/stores/mem/objects/board/seen?wait=true', { method: 'PUT', body: 'x', headers: { Authorization: `Bearer ${TOKEN}` } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await service?.close();
});

describe.skipIf(!available)('Bull Board in Chromium', () => {
  it('is refused without credentials', async () => {
    // A navigation answered by a basic-auth challenge the browser cannot meet is a network error in headless
    // Chromium; the browser's own request API shows the status.
    const context = await browser.newContext();
    const response = await context.request.get(`${server.url}/admin/queues`);
    expect(response.status()).toBe(401);
    expect(response.headers()['www-authenticate']).toMatch(/^Basic/);
    await expect((await context.newPage()).goto(`${server.url}/admin/queues`)).rejects.toThrow(/AUTH/);
    await context.close();
  });

  it('shows the project’s queues to a user signed in with a token', async () => {
    const context = await browser.newContext({ httpCredentials: { username: 'ops', password: TOKEN } });
    const page = await context.newPage();
    const response = await page.goto(`${server.url}/admin/queues`);
    expect(response?.status()).toBe(200);
    await page.getByText('objects', { exact: false }).first().waitFor({ timeout: 20_000 });
    const text = await page.locator('body').innerText();
    expect(text).toContain('objects');
    expect(text).toContain('Kyozo Storage');
    await context.close();
  });
});
