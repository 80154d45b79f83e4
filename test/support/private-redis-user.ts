/**
 * Another process using `npm start`'s private redis-server, for tests: `node --import tsx private-redis-user.ts
 * <root>` starts or joins the server of `<root>/redis` as `npm start` does, prints its URL, and on SIGTERM stops
 * using it and exits.
 */
import { pino } from 'pino';
import { startPrivateRedis } from '../../src/embedded-redis.js';

const redis = await startPrivateRedis(process.argv[2]!, pino({ level: 'silent' }));
console.log(redis.url);
process.once('SIGTERM', () => void redis.stop().then(() => process.exit(0)));
setInterval(() => undefined, 60_000); // runs until told to stop
