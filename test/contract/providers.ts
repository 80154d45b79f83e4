/**
 * The providers the contract suite runs against: one entry each. A new provider adds one line here and must pass
 * every case in contract.test.ts.
 */
import type { StorageProvider } from '../../src/providers/types.js';
import { RamProvider } from '../../src/providers/ram.js';

export interface ProviderFixture {
  name: string;
  create(): Promise<{ provider: StorageProvider; dispose(): Promise<void> }>;
}

export const fixtures: ProviderFixture[] = [
  { name: 'ram', create: async () => ({ provider: new RamProvider({ maxBytes: 256 * 1024 * 1024 }), dispose: async () => {} }) },
];
