/**
 * A body over STAGING_INLINE_MAX sent over HTTP while the staging store is down (its bucket missing, say) is answered
 * 503 PROVIDER_UNAVAILABLE with Retry-After. Before session 20 the first such request was 400 "the request body was
 * cut off: the client closed the connection": staging stopped reading the body it could not store, and the API took
 * the request it had ended itself for one the client had left.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { listen, type HttpServer } from '../../src/api/server.js';
import { ProviderUnavailableError } from '../../src/providers/errors.js';
import { interceptMethod } from '../support/intercept.js';
import { quietLog, startTestService, type TestService } from '../support/service.js';

let service: TestService;
let server: HttpServer;

beforeAll(async () => {
  service = await startTestService(
    'staging-down',
    {},
    {
      worker: false,
      // The staging store refuses at once, before reading the body (as S3 does for a bucket that is gone).
      staging: {
        web: (staging) =>
          interceptMethod(staging, 'write', () => async () => {
            throw new ProviderUnavailableError('write "staging/…": NoSuchBucket (HTTP 404)');
          }),
      },
    },
  );
  server = await listen(createApp(service.deps), service.config, quietLog);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await service?.close();
});

describe('an upload while the staging store is down', () => {
  it('is 503 PROVIDER_UNAVAILABLE with Retry-After, the first one too, not a client error', async () => {
    for (let i = 0; i < 2; i++) {
      const response = await fetch(`${server.url}/v1/stores/files/objects/big-${i}.bin`, { method: 'PUT', body: Buffer.alloc(300 * 1024, 7) });
      const answer = (await response.json()) as { error?: { code: string } };
      expect({ status: response.status, code: answer.error?.code, retryAfter: response.headers.get('retry-after') !== null }).toEqual({
        status: 503,
        code: 'PROVIDER_UNAVAILABLE',
        retryAfter: true,
      });
    }
  });
});
