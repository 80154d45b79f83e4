/**
 * Preloaded into `npm start` by tests (`node --import tsx --import ./test/support/no-redis-on-6379.ts src/main.ts`):
 * 127.0.0.1:6379 refuses, as on a machine without Redis, so it starts its private redis-server on its data
 * directory, and the shared Redis the other tests use there is never touched.
 */
import net from 'node:net';

const connect = net.connect;
net.connect = ((...args: unknown[]) => {
  const [options] = args as [{ port?: number | string }];
  if (typeof options !== 'object' || Number(options.port) !== 6379) return (connect as (...a: unknown[]) => net.Socket)(...args);
  const socket = new net.Socket();
  process.nextTick(() => socket.destroy(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379 (a test: no Redis here)'), { code: 'ECONNREFUSED' })));
  return socket;
}) as typeof net.connect;
