/**
 * A hybrid store from configuration (`providers/index.ts`).
 *
 * The tiers' kinds come from `HYBRID_HOT` / `HYBRID_COLD` / `HYBRID_BACKUP`; each tier is built as a store named
 * `<store>--hot`, `<store>--cold`, `<store>--backup`, so a disk tier lives in `<root>/<store>--backup` and per-tier
 * settings take that name as a prefix (`MEDIA__BACKUP_S3_BUCKET`), falling back to the hybrid store's own
 * (`MEDIA_S3_BUCKET`) and then the global ones. A ram hot tier gets `HOT_MAX_BYTES` as its budget. Two tiers on the
 * same bucket and prefix (or repository) are refused at start.
 */
import type { Cluster, Redis } from 'ioredis';
import { ConfigError, loadConfig, storeConfig, storeEnvPrefix, type Config, type StoreKind, type StoreSettings } from '../config.js';
import type { Logger } from '../log.js';
import { createHybridProvider, type HybridProvider } from './hybrid.js';
import { overlaps, storeLocation } from './store-location.js';
import type { StorageProvider } from './types.js';

export interface HybridStoreDeps {
  redis?: Redis | Cluster;
  log?: Logger;
  /** Service settings: per-tier overrides from `env`, tiering, the Redis key prefix. Defaults when absent. */
  config?: Pick<Config, 'env' | 'storageRootDir' | 'queuePrefix' | 'tiering' | 'stores'>;
}

/** Builds one tier: `createProvider` of index.ts, passed in so that this module does not import the factory table. */
export type TierFactory = (settings: StoreSettings, deps: { redis?: Redis | Cluster; log?: Logger }) => Promise<StorageProvider>;

export type TierRole = 'hot' | 'cold' | 'backup';

/** The provider kind of each of a hybrid store's tiers (`HYBRID_HOT`, `HYBRID_COLD`, `HYBRID_BACKUP`). */
export function tierKinds(settings: StoreSettings): Record<TierRole, StoreKind> {
  return { hot: settings.HYBRID_HOT, cold: settings.HYBRID_COLD, backup: settings.HYBRID_BACKUP };
}

/** `<store>--<role>`'s settings: its own prefix, else the hybrid store's, else the global ones. */
export function tierSettings(settings: StoreSettings, role: TierRole, kind: StoreKind, config?: HybridStoreDeps['config']): StoreSettings {
  const name = `${settings.name}--${role}`;
  if (config === undefined) return { ...settings, name, kind };
  const storePrefix = storeEnvPrefix(settings.name);
  const inherited: Record<string, string | undefined> = { ...config.env };
  for (const [variable, value] of Object.entries(config.env)) {
    if (variable.startsWith(storePrefix)) inherited[variable.slice(storePrefix.length)] = value;
  }
  return storeConfig({ env: inherited, storageRootDir: settings.rootDir }, { name, kind });
}

export async function openHybridStore(settings: StoreSettings, deps: HybridStoreDeps, createTier: TierFactory): Promise<HybridProvider> {
  const store = settings.name;
  if (deps.redis === undefined) throw new ConfigError(`store "${store}": a hybrid store needs Redis (read counts and hot-tier invalidation)`);
  const config = deps.config ?? loadConfig({});
  const kinds = tierKinds(settings);
  const roles = Object.keys(kinds) as TierRole[];
  const tiers = new Map<TierRole, StoreSettings>();
  for (const role of roles) {
    if (kinds[role] === 'hybrid') throw new ConfigError(`store "${store}": HYBRID_${role.toUpperCase()} cannot be hybrid`);
    const tier = tierSettings(settings, role, kinds[role], deps.config);
    if (config.stores.some((other) => other.name === tier.name)) {
      throw new ConfigError(`store "${store}": its ${role} tier is the store "${tier.name}", and STORES names another store so`);
    }
    if (role === 'hot' && tier.kind === 'ram') tier.RAM_MAX_BYTES = config.tiering.hotMaxBytes;
    const location = storeLocation(tier);
    for (const [otherRole, other] of tiers) {
      const otherLocation = storeLocation(other);
      if (location === undefined || otherLocation === undefined || !overlaps(location, otherLocation)) continue;
      throw new ConfigError(
        `store "${store}": the ${otherRole} tier (${otherLocation.description}) and the ${role} tier (${location.description}) would share data; give one its own place (e.g. ${storeEnvPrefix(tier.name)}S3_BUCKET, ${storeEnvPrefix(tier.name)}S3_PREFIX or ${storeEnvPrefix(tier.name)}GIT_REPO_PATH)`,
      );
    }
    tiers.set(role, tier);
  }

  const log = deps.log?.child({ store, provider: 'hybrid' });
  const opened: Partial<Record<TierRole, StorageProvider>> = {};
  try {
    for (const role of roles) opened[role] = await createTier(tiers.get(role)!, { redis: deps.redis, log: deps.log });
  } catch (error) {
    await Promise.allSettled(Object.values(opened).map((provider) => provider.close()));
    throw error;
  }
  // From here on the hybrid owns its tiers (and closes them if it cannot start).
  return createHybridProvider({
    name: store,
    hot: opened.hot!,
    cold: opened.cold!,
    backup: opened.backup!,
    redis: deps.redis,
    keyPrefix: config.queuePrefix,
    accessThreshold: config.tiering.accessThreshold,
    hotTtlSeconds: config.tiering.hotTtlSeconds,
    hotMaxBytes: config.tiering.hotMaxBytes,
    log,
  });
}
