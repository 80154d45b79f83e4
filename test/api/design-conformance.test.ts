/**
 * Design conformance (DESIGN §8, README "HTTP API"): two defects a design audit found before session 20.
 *
 * 1. `GET .../url` on an s3 store whose credentials cannot be loaded (none configured, instance metadata not
 *    answering, an expired SSO session) answers 500 INTERNAL: `S3Provider.presign` calls `getSignedUrl` without
 *    mapping the SDK's `CredentialsProviderError` (every other s3 call maps it to PROVIDER_UNAVAILABLE, 503 with
 *    Retry-After, as DESIGN §8 and the README's "Missing credentials are unavailable (503...)" say).
 * 2. `GET .../url?method=PUT` on a hybrid store whose cold tier presigns natively answers 501 NOT_SUPPORTED, a status
 *    `/openapi.json` does not list for that operation (the README: every status a route answers is in the document).
 *
 * Neither needs an S3 server: presigning is local, and the store is opened with its versioning mode given.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overrideEnv } from '../support/env.js';
import { startTestService, type TestService } from '../support/service.js';

let restoreEnv: () => void = () => undefined;
let service: TestService;

beforeAll(async () => {
  // No credential source answers: no environment, no files, no instance metadata.
  restoreEnv = overrideEnv({
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_SESSION_TOKEN: undefined,
    AWS_PROFILE: undefined,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: '/nonexistent/kyozo-design-conformance',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/kyozo-design-conformance',
  });
  service = await startTestService(
    'design-conformance',
    {
      STORES: 'files:disk,docs:s3,media:hybrid',
      S3_BUCKET: 'kyozo-design-conformance',
      // Nothing listens there; presigning never sends a request.
      S3_ENDPOINT: 'http://127.0.0.1:9',
      S3_FORCE_PATH_STYLE: 'true',
      S3_VERSIONING: 'explicit',
      DOCS_S3_PREFIX: 'docs/',
      MEDIA__COLD_S3_PREFIX: 'media/',
    },
    { worker: false },
  );
});

afterAll(async () => {
  await service?.close();
  restoreEnv();
});

describe('GET .../url on an s3 store without credentials (DESIGN §8: 503 with Retry-After when a provider is down)', () => {
  it('a GET URL is 503 PROVIDER_UNAVAILABLE with Retry-After, as a read of the same store is, not 500', async () => {
    const read = await service.app.request('/v1/stores/docs/objects/report.pdf');
    expect(read.status).toBe(503); // the store's other calls say so already

    const response = await service.app.request('/v1/stores/docs/objects/report.pdf/url?method=GET');
    const body = (await response.json()) as { error?: { code: string } };
    expect({ status: response.status, code: body.error?.code }).toEqual({ status: 503, code: 'PROVIDER_UNAVAILABLE' });
    expect(response.headers.get('retry-after')).not.toBeNull();
  });

  it('a PUT URL too', async () => {
    const response = await service.app.request('/v1/stores/docs/objects/report.pdf/url?method=PUT');
    expect(response.status).toBe(503);
  });
});

describe('/openapi.json lists every status GET .../url answers', () => {
  it('501 for a presigned PUT of a hybrid store (uploads go through the API) is documented', async () => {
    const response = await service.app.request('/v1/stores/media/objects/photo.jpg/url?method=PUT');
    expect(response.status).toBe(501);
    const doc = (await (await service.app.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    const documented = Object.keys(doc.paths['/v1/stores/{store}/objects/{key}/url']!.get!.responses);
    expect(documented).toContain('501');
  });
});
