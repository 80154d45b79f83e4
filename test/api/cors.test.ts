/**
 * CORS (`src/api/cors.ts`): preflights and the headers of answers, per path and origin, and `CORS_ORIGINS` as the
 * configuration reads it. A real browser using them is `test/e2e/cors.test.ts`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { startTestService, type TestService } from '../support/service.js';

const TOKEN = 'cors-test-token-0123456789abcdef';
const APP = 'https://app.example';
const bearer = { Authorization: `Bearer ${TOKEN}` };

let service: TestService;
const request = (path: string, init?: RequestInit) => service.app.request(path, init);
const preflight = (path: string, origin: string, method = 'PUT', headers = 'authorization, content-type, x-meta-owner') =>
  request(path, { method: 'OPTIONS', headers: { Origin: origin, 'Access-Control-Request-Method': method, 'Access-Control-Request-Headers': headers } });

beforeAll(async () => {
  service = await startTestService('api-cors', { API_TOKENS: TOKEN, STORES: 'files:disk', CORS_ORIGINS: `${APP},http://localhost:5173` });
});
afterAll(async () => {
  await service?.close();
});

describe('preflight', () => {
  it('a listed origin is answered 204 with what it asked for, without a token', async () => {
    const response = await preflight('/v1/stores/files/objects/docs/a.txt', APP);
    expect(response.status).toBe(204);
    expect(Object.fromEntries(response.headers)).toMatchObject({
      'access-control-allow-origin': APP,
      'access-control-allow-methods': 'GET, HEAD, PUT, POST, DELETE',
      'access-control-allow-headers': 'authorization, content-type, x-meta-owner',
      'access-control-max-age': '600',
      vary: 'Origin',
    });
    expect(response.headers.get('x-request-id')).toBeTruthy();
    expect(await response.text()).toBe('');
  });

  it('grants no headers it cannot read as names, and private-network access when Chrome asks', async () => {
    const odd = await preflight('/v1/stores/files/objects/a', APP, 'PUT', 'x-ok, bad header');
    expect(odd.status).toBe(204);
    expect(odd.headers.get('access-control-allow-headers')).toBeNull();
    const local = await request('/v1/events', {
      method: 'OPTIONS',
      headers: { Origin: 'http://localhost:5173', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Private-Network': 'true' },
    });
    expect(local.status).toBe(204);
    expect(local.headers.get('access-control-allow-private-network')).toBe('true');
    expect(local.headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
  });

  it('an origin not listed gets no CORS headers: the browser stops there', async () => {
    const response = await preflight('/v1/stores/files/objects/docs/a.txt', 'https://evil.example');
    expect(response.status).toBe(401); // as any OPTIONS without a token
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('a signed URL answers every origin, for the methods it serves', async () => {
    const url = service.deps.signer.sign({ method: 'PUT', store: 'files', key: 'up.txt', expires: Math.floor(Date.now() / 1000) + 60 });
    const response = await preflight(url, 'https://anyone.example', 'PUT', 'content-type');
    expect(response.status).toBe(204);
    expect(Object.fromEntries(response.headers)).toMatchObject({
      'access-control-allow-origin': '*',
      'access-control-allow-methods': 'GET, HEAD, PUT',
      'access-control-allow-headers': 'content-type',
    });
    expect(response.headers.get('vary')).toBeNull();
  });

  it('the board answers no origin, listed or not', async () => {
    const response = await preflight('/admin/queues/api/queues', APP, 'GET');
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('an OPTIONS that is not a preflight is what it was: 405 with Allow', async () => {
    const response = await request('/v1/stores/files/objects/docs/a.txt', { method: 'OPTIONS', headers: { ...bearer, Origin: APP } });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBeTruthy();
    expect(response.headers.get('access-control-allow-origin')).toBe(APP);
  });
});

describe('answers', () => {
  it('a listed origin may write (not refused as cross-site) and read every header of the answers', async () => {
    const put = await request('/v1/stores/files/objects/docs/b.txt?wait=true', {
      method: 'PUT',
      body: 'from the app',
      headers: { ...bearer, Origin: APP, 'Sec-Fetch-Site': 'cross-site', 'X-Meta-Owner': 'ada' },
    });
    expect(put.status).toBe(200);
    expect(put.headers.get('access-control-allow-origin')).toBe(APP);
    const get = await request('/v1/stores/files/objects/docs/b.txt', { headers: { ...bearer, Origin: APP } });
    expect(await get.text()).toBe('from the app');
    expect(Object.fromEntries(get.headers)).toMatchObject({ 'access-control-allow-origin': APP, 'access-control-expose-headers': '*', vary: 'Origin', 'x-meta-owner': 'ada' });
  });

  it('errors carry the headers too, so the page can read them', async () => {
    const unauthorized = await request('/v1/stores/files/objects/docs/b.txt', { headers: { Origin: APP } });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers.get('access-control-allow-origin')).toBe(APP);
    const missing = await request('/v1/stores/nope/objects/x', { headers: { ...bearer, Origin: APP } });
    expect(missing.status).toBe(404);
    expect(missing.headers.get('access-control-allow-origin')).toBe(APP);
  });

  it('an origin not listed is still refused a write, and gets no CORS headers', async () => {
    const response = await request('/v1/stores/files/objects/docs/c.txt', { method: 'PUT', body: 'x', headers: { ...bearer, Origin: 'https://evil.example' } });
    expect(response.status).toBe(403);
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('with CORS_ORIGINS=* every origin may call /v1, the board still none', async () => {
    const app = createApp({ ...service.deps, config: { ...service.deps.config, corsOrigins: ['*'] } });
    const put = await app.request('/v1/stores/files/objects/docs/d.txt', { method: 'PUT', body: 'x', headers: { ...bearer, Origin: 'https://other.example' } });
    expect(put.status).toBe(202);
    expect(put.headers.get('access-control-allow-origin')).toBe('*');
    expect(put.headers.get('vary')).toBeNull();
    const board = await app.request('/admin/queues', { headers: { Authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`, Origin: 'https://other.example' } });
    expect(board.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('without CORS_ORIGINS a /v1 answer has no CORS headers; a signed URL still has', async () => {
    const app = createApp({ ...service.deps, config: { ...service.deps.config, corsOrigins: [] } });
    const get = await app.request('/v1/stores', { headers: { ...bearer, Origin: APP } });
    expect(get.status).toBe(200);
    expect(get.headers.get('access-control-allow-origin')).toBeNull();
    await request('/v1/stores/files/objects/signed.txt?wait=true', { method: 'PUT', body: 'signed', headers: bearer });
    const url = service.deps.signer.sign({ method: 'GET', store: 'files', key: 'signed.txt', expires: Math.floor(Date.now() / 1000) + 60 });
    const signed = await app.request(url, { headers: { Origin: 'https://anyone.example' } });
    expect(await signed.text()).toBe('signed');
    expect(signed.headers.get('access-control-allow-origin')).toBe('*');
  });
});

describe('CORS_ORIGINS', () => {
  const base = { API_TOKENS: TOKEN };

  it('keeps each entry as a browser sends its origin', () => {
    expect(loadConfig({ ...base, CORS_ORIGINS: 'https://App.Example:443/, http://localhost:5173' }).corsOrigins).toEqual(['https://app.example', 'http://localhost:5173']);
    expect(loadConfig(base).corsOrigins).toEqual([]);
  });

  it('refuses an entry that could never match, naming it', () => {
    expect(() => loadConfig({ ...base, CORS_ORIGINS: 'https://app.example/path' })).toThrow(/CORS_ORIGINS.*entry 1 has more than an origin: a browser sends https:\/\/app\.example/);
    expect(() => loadConfig({ ...base, CORS_ORIGINS: 'http://ok.example,app.example' })).toThrow(/entry 2 is not an http\(s\) origin/);
    expect(() => loadConfig({ ...base, CORS_ORIGINS: 'https://*.example.com' })).toThrow(/entry 1 has a wildcard in its host/);
  });

  it('refuses * without API_TOKENS', () => {
    expect(() => loadConfig({ CORS_ORIGINS: '*' })).toThrow(ConfigError);
    expect(() => loadConfig({ CORS_ORIGINS: '*' })).toThrow(/without API_TOKENS/);
    expect(loadConfig({ ...base, CORS_ORIGINS: '*' }).corsOrigins).toEqual(['*']);
  });
});
