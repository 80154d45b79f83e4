/**
 * `refusedIfGone` (s3.ts) turns a 404 of a write carrying If-Match into PreconditionFailedError ("the object ifMatch
 * names was deleted meanwhile"); its first version (session 20) did so for every 404. A CopyObject also answers 404
 * NoSuchKey when its SOURCE is missing: a write over S3_MULTIPART_THRESHOLD is uploaded to `.kyozo/tmp/<id>` and copied into
 * place with If-Match. With the staged upload gone (here: removed just before the copy, as a cleanup sweep in another
 * process would after STAGING_TTL; the target object is untouched and still matches), the write is refused as a
 * failed precondition (412, not retried, the client told its etag is stale) though the object it named is current.
 */
import { DeleteObjectCommand, type CopyObjectCommandInput } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PreconditionFailedError } from '../../src/providers/errors.js';
import { createS3Provider, type S3Provider } from '../../src/providers/s3.js';
import { startS3, s3ProviderOptions, type S3TestEndpoint } from '../support/s3.js';

let s3: S3TestEndpoint;
let provider: S3Provider;
let bucket: string;
let dropSource = false;

beforeAll(async () => {
  s3 = await startS3();
  bucket = await s3.createBucket();
  provider = await createS3Provider(s3ProviderOptions(s3, bucket, { versioning: 'explicit', multipartThreshold: 5 * 1024 * 1024 }));
  provider.client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as CopyObjectCommandInput;
      if (dropSource && context.commandName === 'CopyObjectCommand' && input.CopySource?.includes('.kyozo/tmp/')) {
        const sourceKey = decodeURIComponent(input.CopySource.slice(bucket.length + 1));
        await s3.client().send(new DeleteObjectCommand({ Bucket: bucket, Key: sourceKey }));
      }
      return next(args);
    },
    { step: 'initialize', name: 'dropCopySource' },
  );
}, 120_000);
afterAll(async () => {
  await provider?.close();
  await s3?.close();
});

describe('s3: a conditional write whose staged upload is gone', () => {
  it('is not a failed precondition while the object ifMatch names is still current', async () => {
    const seed = await provider.write('doc', 'seed');
    dropSource = true;
    const outcome = await provider.write('doc', Buffer.alloc(6 * 1024 * 1024, 1), { ifMatch: seed.etag }).then(
      () => 'written',
      (error: unknown) => error,
    );
    dropSource = false;
    expect((await provider.stat('doc')).etag).toBe(seed.etag); // the named object is current
    expect(outcome).not.toBeInstanceOf(PreconditionFailedError);
  }, 60_000);
});
