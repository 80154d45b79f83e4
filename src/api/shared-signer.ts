/**
 * The URL signer of a web process. With `URL_SIGNING_SECRET` its secret is that one; without, one random secret
 * shared by every API process through Redis: read at start, then again every `REFRESH_MS`. Should Redis lose it (a
 * restart without persistence, a flush), a process puts its own back unless another already did, and each adopts
 * whichever is there — the processes come back to one secret instead of each signing with its own for good. The
 * signer keeps the secret it had before, so the URLs it signed with it still work here.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { RedisConnection } from '../redis.js';
import { UrlSigner } from './signing.js';

export const REFRESH_MS = 30_000;

export interface SharedSigner {
  signer: UrlSigner;
  /** Reads the shared secret again now (as the timer does). */
  refresh(): Promise<void>;
  close(): void;
}

export async function sharedSigner(config: Pick<Config, 'urlSigningSecret' | 'queuePrefix'>, redis: RedisConnection, log: Logger): Promise<SharedSigner> {
  if (config.urlSigningSecret !== undefined) return { signer: new UrlSigner(config.urlSigningSecret), refresh: async () => undefined, close: () => undefined };
  const key = `${config.queuePrefix}:url-signing-secret`;
  const shared = async (mine: string) => {
    await redis.set(key, mine, 'NX');
    return (await redis.get(key)) ?? mine;
  };
  const signer = new UrlSigner(await shared(randomBytes(32).toString('hex')));
  const refresh = async () => {
    const secret = await shared(signer.current);
    if (secret === signer.current) return;
    log.warn('the shared URL-signing secret changed in Redis (lost and set again?): signing with it from now on');
    signer.rotate(secret);
  };
  const timer = setInterval(() => void refresh().catch((error: unknown) => log.warn({ err: error }, 'could not read the shared URL-signing secret')), REFRESH_MS);
  timer.unref();
  return { signer, refresh, close: () => clearInterval(timer) };
}
