/**
 * Preloaded into `npm start` by tests, beside `no-redis-on-6379.ts`: connections to port 6379 go to the port in
 * `REDIRECT_6379_TO` instead, a throw-away server standing in for the machine's Redis (loading, wanting a password,
 * not Redis at all), so the shared Redis the other tests use there is never touched. Both of `net`'s connect
 * functions: the probe uses one, ioredis the other.
 */
import net from 'node:net';

const to = Number(process.env.REDIRECT_6379_TO);
for (const name of ['connect', 'createConnection'] as const) {
  const original = net[name] as (...args: unknown[]) => net.Socket;
  (net as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
    const [options] = args as [{ port?: number | string } | number | string];
    if (typeof options === 'object' && options !== null && Number(options.port) === 6379) args[0] = { ...options, port: to };
    else if (Number(options) === 6379) args[0] = to;
    return original(...args);
  };
}
