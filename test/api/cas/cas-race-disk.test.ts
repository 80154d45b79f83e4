/**
 * CAS through the whole service on a disk store: web process + ONE worker process with WORKER_CONCURRENCY=8 (the
 * README asks for one worker process per disk root when conditional writes matter).
 */
import { casSuite } from './cas-suite.js';
import { startCluster } from './cas-support.js';

casSuite({
  name: 'disk',
  store: 'files',
  ordered: true,
  everyWrite: false,
  start: () => startCluster('cas-disk', { STORES: 'files:disk', WORKER_CONCURRENCY: '8' }, { workers: 1 }),
});
