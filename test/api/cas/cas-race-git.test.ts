/**
 * CAS through the whole service on a git store: web process + TWO worker processes (WORKER_CONCURRENCY=4 each)
 * sharing the repository with GIT_LOCK=redis, as the README says to run several workers on one repository.
 */
import { casSuite } from './cas-suite.js';
import { startCluster } from './cas-support.js';

casSuite({
  name: 'git-2workers',
  store: 'repo',
  ordered: false,
  everyWrite: true,
  start: () => startCluster('cas-git', { STORES: 'repo:git', GIT_LOCK: 'redis', WORKER_CONCURRENCY: '4' }, { workers: 2 }),
});
