/**
 * The URL-signing secret shared through Redis by API processes without URL_SIGNING_SECRET: when Redis loses it, the
 * processes come back to one secret, and a process still takes the URLs it signed before it switched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedSigner, type SharedSigner } from '../../src/api/shared-signer.js';
import { UrlSigner, type SignedGrant } from '../../src/api/signing.js';
import { quietLog } from '../jobs/fixtures/pipeline.js';
import { redisFixture, type RedisFixture } from '../support/redis.js';

const grant = (key: string): SignedGrant => ({ method: 'GET', store: 'files', key, expires: Math.floor(Date.now() / 1000) + 600 });
const signatureOf = (url: string) => new URL(url, 'http://api').searchParams.get('signature') ?? undefined;

describe('the shared URL-signing secret', () => {
  let redis: RedisFixture;
  const started: SharedSigner[] = [];
  const start = async () => {
    const signing = await sharedSigner({ queuePrefix: redis.prefix }, redis.producer, quietLog);
    started.push(signing);
    return signing;
  };

  beforeAll(async () => {
    redis = await redisFixture('shared-signer');
  });
  afterAll(async () => {
    for (const signing of started) signing.close();
    await redis?.cleanup();
  });

  it('is one secret for every process, and they come back to one when Redis loses it', async () => {
    const a = await start();
    const b = await start();
    const before = a.signer.sign(grant('before'));
    expect(b.signer.refusal(grant('before'), signatureOf(before))).toBeUndefined();

    // Redis loses its data; a process started now makes a secret of its own.
    await redis.producer.del(`${redis.prefix}:url-signing-secret`);
    const c = await start();
    expect(c.signer.refusal(grant('before'), signatureOf(before))).toBe('signature does not match');

    await a.refresh();
    await b.refresh();
    const after = a.signer.sign(grant('after'));
    for (const signing of [a, b, c]) expect(signing.signer.refusal(grant('after'), signatureOf(after))).toBeUndefined();
    // What a process signed before it switched still works there.
    expect(a.signer.refusal(grant('before'), signatureOf(before))).toBeUndefined();
  });

  it('is put back by a running process when Redis lost it, so a process started later takes it', async () => {
    const a = await start();
    const signed = a.signer.sign(grant('kept'));
    await redis.producer.del(`${redis.prefix}:url-signing-secret`);
    await a.refresh();
    const later = await start();
    expect(later.signer.refusal(grant('kept'), signatureOf(signed))).toBeUndefined();
  });
});

describe('URL signer rotation', () => {
  const grant = (expires: number) => ({ method: 'GET' as const, store: 'files', key: 'doc.txt', expires });
  const signatureOf = (signer: UrlSigner, expires: number) => new URL(signer.sign(grant(expires)), 'http://x').searchParams.get('signature')!;

  it('takes what the previous secret signed before the rotation, not URLs that secret signs for later expiries', () => {
    const now = Date.now();
    const nowSeconds = Math.floor(now / 1000);
    const old = new UrlSigner('previous-secret-0123456789');
    const signedBefore = signatureOf(old, nowSeconds + 3600);
    const signer = new UrlSigner('previous-secret-0123456789');
    signer.rotate('current-secret-0123456789', now);

    expect(signer.refusal(grant(nowSeconds + 3600), signedBefore, now)).toBeUndefined();
    // At most 7 days from the rotation (and a few minutes: other processes take up the new secret up to 30 s later,
    // their clocks a little apart): the previous secret could not have signed a URL valid any longer than that.
    const longest = nowSeconds + 7 * 24 * 3600 + 60;
    expect(signer.refusal(grant(longest), signatureOf(old, longest), now)).toBeUndefined();
    const later = nowSeconds + 30 * 24 * 3600; // made with a secret that was replaced: someone else's URL
    expect(signer.refusal(grant(later), signatureOf(old, later), now)).toBe('signature does not match');
    expect(signer.refusal(grant(later), signatureOf(signer, later), now)).toBeUndefined();
  });
});
