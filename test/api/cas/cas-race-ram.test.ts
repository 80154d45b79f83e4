/**
 * CAS through the whole service on a ram store: the embedded process (`npm start`: web + worker in one process,
 * the only deployment in which the API reads the ram store the worker writes), WORKER_CONCURRENCY=8.
 */
import { casSuite } from './cas-suite.js';
import { startEmbedded } from './cas-support.js';

casSuite({
  name: 'ram',
  store: 'mem',
  ordered: true,
  everyWrite: false,
  start: () => startEmbedded('cas-ram', { STORES: 'mem:ram', WORKER_CONCURRENCY: '8' }),
});
