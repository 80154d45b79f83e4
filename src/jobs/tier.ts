/**
 * `tier` (`TIER_CRON`, every 5 minutes): for every hybrid store (or the one named), computes the promotion and
 * demotion plan from the read counts all processes share in Redis, applies it to this process's hot tier and
 * publishes it, so every other process holding the store follows it on receipt. Then it runs the store's backup
 * repair pass (`repairBackups`): keys whose backup tier may lag cold after a failed or interrupted mutation get
 * cold's state copied. Event `tier.completed` with the counts and bytes moved here and the keys repaired.
 * Idempotent: applying a plan twice promotes nothing twice; a repaired key leaves the ledger.
 */
import { z } from 'zod';
import { InvalidArgumentError } from '../providers/errors.js';
import { isHybridProvider, type BackupRepairOutcome, type HybridProvider, type TieringOutcome } from '../providers/hybrid.js';
import type { StorageProvider } from '../providers/types.js';
import { defineJob, storeNameSchema, storeOf, throwIfInterrupted } from './definition.js';

export const tierPayload = z.object({ store: storeNameSchema.optional() }).strict();

export interface StoreTiering extends TieringOutcome {
  planned: { promote: number; demote: number };
  backup: BackupRepairOutcome;
}

export interface TierResult {
  stores: Record<string, StoreTiering>;
  promoted: number;
  promotedBytes: number;
  demoted: number;
  demotedBytes: number;
  /** Keys whose backup copy was repaired from cold. */
  repaired: number;
}

/** A store named for a tier pass must be hybrid: only hybrid stores have tiers. */
export function requireTiered(name: string, provider: StorageProvider): HybridProvider {
  if (!isHybridProvider(provider)) throw new InvalidArgumentError(`store "${name}" is a ${provider.kind} store: only hybrid stores have tiers`);
  return provider;
}

export const tierJob = defineJob({
  name: 'tier',
  queue: 'maintenance',
  schema: tierPayload,
  async handle(payload, ctx) {
    const names = payload.store === undefined ? [...ctx.stores.keys()] : [payload.store];
    const result: TierResult = { stores: {}, promoted: 0, promotedBytes: 0, demoted: 0, demotedBytes: 0, repaired: 0 };
    for (const name of names) {
      const store = storeOf(ctx, name);
      if (payload.store === undefined && !isHybridProvider(store)) continue;
      const provider = requireTiered(name, store);
      throwIfInterrupted(ctx);
      const plan = await provider.planTiering();
      const outcome = await provider.applyTiering(plan);
      await provider.publishTiering(plan);
      throwIfInterrupted(ctx);
      const backup = await provider.repairBackups();
      result.stores[name] = { ...outcome, planned: { promote: plan.promote.length, demote: plan.demote.length }, backup };
      result.repaired += backup.repaired;
      result.promoted += outcome.promoted;
      result.promotedBytes += outcome.promotedBytes;
      result.demoted += outcome.demoted;
      result.demotedBytes += outcome.demotedBytes;
      await ctx.reportProgress?.({ phase: 'tier', done: Object.keys(result.stores).length });
    }
    return { result, event: { type: 'tier.completed', ...(payload.store !== undefined ? { store: payload.store } : {}), data: result } };
  },
});
