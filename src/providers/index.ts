/**
 * Stores from config: `STORES=default:disk,cache:ram` builds one provider per name. A new provider is one file
 * plus one line in `factories`. Whatever a provider needs from outside (Redis for git's lock and hybrid's access
 * counts, hybrid's invalidation channel) arrives in `StoreDeps`: providers never import events or jobs.
 */
import path from 'node:path';
import type { Redis, Cluster } from 'ioredis';
import { ConfigError, STAGING_STORE_NAME, storeConfig, type Config, type StoreKind, type StoreSettings } from '../config.js';
import type { Logger } from '../log.js';
import { DiskProvider } from './disk.js';
import { openGitStore } from './git.js';
import { openHybridStore, tierKinds, tierSettings, type HybridStoreDeps, type TierRole } from './hybrid-store.js';
import { withMetrics, type Observation } from './metrics.js';
import { RamProvider } from './ram.js';
import { createS3ProviderFromSettings } from './s3.js';
import { overlaps, storeLocation, type StoreLocation } from './store-location.js';
import type { StorageProvider } from './types.js';

export interface StoreDeps {
  redis?: Redis | Cluster;
  log?: Logger;
  /** Receives every provider operation's latency and outcome (the API's prom-client histograms). */
  observe?: (store: string, observation: Observation) => void;
  /** Service settings a store may need besides its own (hybrid: per-tier overrides, tiering); `createStores` fills it. */
  config?: HybridStoreDeps['config'];
}

export type ProviderFactory = (settings: StoreSettings, deps: StoreDeps) => StorageProvider | Promise<StorageProvider>;

const factories: Partial<Record<StoreKind, ProviderFactory>> = {
  ram: (s) => new RamProvider({ maxBytes: s.RAM_MAX_BYTES }),
  disk: (s) => new DiskProvider({ root: storeDir(s), fsync: s.DISK_FSYNC }),
  git: (s, deps) => openGitStore(s, deps),
  s3: (s, deps) => createS3ProviderFromSettings(s, deps.log),
  hybrid: (s, deps) => openHybridStore(s, deps, createProvider),
};

export class StoreConfigError extends Error {}

export function storeDir(settings: StoreSettings): string {
  return path.join(settings.rootDir, settings.name);
}

export async function createProvider(settings: StoreSettings, deps: StoreDeps = {}): Promise<StorageProvider> {
  const factory = factories[settings.kind];
  if (!factory) throw new StoreConfigError(`store "${settings.name}": provider kind "${settings.kind}" is not available in this build`);
  return factory(settings, deps);
}

/** The settings of what keeps a store's data: the store itself, or a hybrid store's tiers. */
function dataHolders(settings: StoreSettings, config: Config): StoreSettings[] {
  if (settings.kind !== 'hybrid') return [settings];
  return Object.entries(tierKinds(settings)).map(([role, kind]) => tierSettings(settings, role as TierRole, kind, config));
}

/**
 * The staging area's settings (`STAGING_KIND`): a disk store `.staging` under the root, or an s3 store named `staging`,
 * so that `STAGING_S3_BUCKET`, `STAGING_S3_PREFIX`... set it apart from the stores' (then the global S3 settings).
 */
export function stagingSettings(config: Pick<Config, 'env' | 'storageRootDir' | 'payloads'>): StoreSettings {
  return storeConfig(config, config.payloads.stagingKind === 's3' ? { name: STAGING_STORE_NAME, kind: 's3' } : { name: '.staging', kind: 'disk' });
}

/**
 * Refuses two stores, or a store and the staging area, that would share data (`store-location.ts`); a hybrid store
 * checks its own tiers at open.
 */
function refuseSharedLocations(config: Config): void {
  const taken: { store: string; location: StoreLocation }[] = [];
  for (const store of config.stores) {
    for (const location of dataHolders(storeConfig(config, store), config).map(storeLocation)) {
      if (location === undefined) continue;
      const other = taken.find((entry) => entry.store !== store.name && overlaps(entry.location, location));
      if (other !== undefined) {
        throw new ConfigError(
          `stores "${other.store}" (${other.location.description}) and "${store.name}" (${location.description}) would share data; give one its own place (its own bucket, S3_PREFIX, GIT_REPO_PATH or name)`,
        );
      }
      taken.push({ store: store.name, location });
    }
  }
  const staging = storeLocation(stagingSettings(config));
  const other = staging && taken.find((entry) => overlaps(entry.location, staging));
  if (staging !== undefined && other !== undefined) {
    throw new ConfigError(
      `store "${other.store}" (${other.location.description}) and the staging area (${staging.description}) would share data; give the staging area its own place (STAGING_S3_BUCKET or STAGING_S3_PREFIX)`,
    );
  }
}

/**
 * Builds every store of `config.stores`, each wrapped in the metrics layer; on failure closes the ones already open.
 */
export async function createStores(config: Config, deps: StoreDeps = {}): Promise<Map<string, StorageProvider>> {
  refuseSharedLocations(config);
  const stores = new Map<string, StorageProvider>();
  try {
    for (const store of config.stores) {
      const provider = await createProvider(storeConfig(config, store), { config, ...deps });
      const observe = deps.observe;
      stores.set(store.name, withMetrics(provider, observe && ((observation) => observe(store.name, observation))));
    }
  } catch (error) {
    await closeStores(stores);
    throw error;
  }
  return stores;
}

export async function closeStores(stores: Map<string, StorageProvider>): Promise<void> {
  await Promise.allSettled([...stores.values()].map((provider) => provider.close()));
}
