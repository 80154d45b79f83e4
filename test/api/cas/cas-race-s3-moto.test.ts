/**
 * CAS through the whole service on an s3 store over moto_server (native bucket versioning; moto 5.2 honours
 * If-Match / If-None-Match on PutObject), web process + TWO worker processes (WORKER_CONCURRENCY=4 each).
 */
import { casSuite } from './cas-suite.js';
import { startCluster } from './cas-support.js';
import { s3ServiceEnv, startMoto } from '../../support/s3.js';

const moto = await startMoto();
const skipReason = moto === undefined ? 'moto_server is not installed (the only local S3 here that honours conditional writes)' : undefined;
if (skipReason !== undefined) console.log(`CAS on s3 with conditional writes not covered: ${skipReason}`);

casSuite({
  name: 's3-moto-2workers',
  store: 'bucket',
  ordered: false,
  everyWrite: true,
  iterations: 8,
  skipReason,
  async start() {
    const bucket = await moto!.createBucket({ versioning: true });
    const cluster = await startCluster('cas-moto', { STORES: 'bucket:s3', ...s3ServiceEnv(moto!, bucket), WORKER_CONCURRENCY: '4' }, { workers: 2 });
    return {
      ...cluster,
      close: async () => {
        await cluster.close();
        await moto!.close();
      },
    };
  },
});
