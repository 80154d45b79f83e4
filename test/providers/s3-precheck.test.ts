/**
 * A write refused by its precondition is refused before its body is uploaded: the first version of `committed`
 * (session 20) checked a large body's preconditions only under the key's lock, after its multipart upload.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Provider, type S3Provider } from '../../src/providers/s3.js';
import { startS3, s3ProviderOptions, type S3TestEndpoint } from '../support/s3.js';

let s3: S3TestEndpoint;
let provider: S3Provider;
const sent: string[] = [];

beforeAll(async () => {
  s3 = await startS3();
  provider = await createS3Provider(s3ProviderOptions(s3, await s3.createBucket(), { versioning: 'explicit', multipartThreshold: 5 * 1024 * 1024 }));
  provider.client.middlewareStack.add((next, context) => async (args) => {
    sent.push(context.commandName ?? '?');
    return next(args);
  }, { step: 'initialize', name: 'count' });
}, 60_000);
afterAll(async () => {
  await provider?.close();
  await s3?.close();
});

describe('an s3 write refused by its precondition', () => {
  it('sends no body: a create-only write of 12 MiB onto a key that exists', async () => {
    await provider.write('x', 'there');
    sent.length = 0;
    await expect(provider.write('x', Buffer.alloc(12 * 1024 * 1024, 1), { ifNoneMatch: '*' })).rejects.toMatchObject({ code: 'PRECONDITION_FAILED' });
    expect(sent.filter((c) => /Upload|PutObject/.test(c))).toEqual([]);
  }, 60_000);
});
