/**
 * Signed URLs for stores without native presigning (DESIGN §5): the API signs `method, store, key, expiry` with
 * HMAC-SHA256 and later serves `/v1/signed/<store>/<key>?method=&expires=&signature=` without a bearer token.
 * The secret is `URL_SIGNING_SECRET` when set, else one random secret shared by every API process through Redis.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { encodeKeyPath } from './object-path.js';

export type SignedMethod = 'GET' | 'PUT';

/** The longest a signed URL may be valid: 7 days, as S3's presigned URLs. */
export const MAX_SIGNED_URL_SECONDS = 7 * 24 * 3600;

/**
 * Processes take up a new shared secret up to a refresh (30 s) apart, and their clocks differ a little: a URL another
 * process signed with the old secret just before it took up the new one is still taken here.
 */
const ROTATION_SLACK_SECONDS = 300;

export interface SignedGrant {
  method: SignedMethod;
  store: string;
  key: string;
  /** Unix seconds. */
  expires: number;
}

export class UrlSigner {
  /**
   * The secret before the last `rotate` and when it was replaced: URLs it signed are still taken, but only those that
   * expire within the longest lifetime of a URL after the rotation (any other was made after it, by someone else).
   */
  private previous: { secret: string; lastValidSecond: number } | undefined;

  constructor(private secret: string) {}

  /** Signs with `secret` from now on; what the current secret signed stays valid until the next rotation. */
  rotate(secret: string, nowMs = Date.now()): void {
    if (secret === this.secret) return;
    const lastValidSecond = Math.ceil(nowMs / 1000) + MAX_SIGNED_URL_SECONDS + ROTATION_SLACK_SECONDS;
    this.previous = { secret: this.secret, lastValidSecond };
    this.secret = secret;
  }

  get current(): string {
    return this.secret;
  }

  private signature(grant: SignedGrant, secret = this.secret): string {
    return createHmac('sha256', secret)
      .update(`${grant.method}\n${grant.store}\n${grant.key}\n${grant.expires}`)
      .digest('hex');
  }

  /** A path (with query) relative to the API's origin. */
  sign(grant: SignedGrant): string {
    const query = new URLSearchParams({ method: grant.method, expires: String(grant.expires), signature: this.signature(grant) });
    return `/v1/signed/${encodeURIComponent(grant.store)}/${encodeKeyPath(grant.key)}?${query}`;
  }

  /** Why a grant is refused, or undefined when it is valid now: up to, not including, its `expires` second. */
  refusal(grant: SignedGrant, signature: string | undefined, nowMs = Date.now()): string | undefined {
    if (signature === undefined || !/^[0-9a-f]{64}$/.test(signature)) return 'missing or malformed signature';
    const given = Buffer.from(signature, 'hex');
    const matches = (secret: string) => timingSafeEqual(Buffer.from(this.signature(grant, secret), 'hex'), given);
    const previous = this.previous;
    const byPrevious = previous !== undefined && grant.expires <= previous.lastValidSecond && matches(previous.secret);
    if (!matches(this.secret) && !byPrevious) return 'signature does not match';
    if (grant.expires * 1000 <= nowMs) return 'signed URL has expired';
    return undefined;
  }
}
