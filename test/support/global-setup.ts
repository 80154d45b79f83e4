/**
 * Finds the Redis every test uses, once, before any test file runs: `REDIS_URL`; else 127.0.0.1:6379; else a Redis
 * in a container when a Docker engine answers (testcontainers); else the run stops with one line saying how to get
 * one. The answer is passed to the test workers as `REDIS_URL`.
 */
import { redisAnswers } from '../../src/embedded-redis.js';
import { dockerAnswers } from './docker.js';

let stopContainer: (() => Promise<unknown>) | undefined;

export async function setup(): Promise<void> {
  if (process.env.REDIS_URL) return;
  if (await redisAnswers('127.0.0.1', 6379)) {
    process.env.REDIS_URL = 'redis://127.0.0.1:6379';
    return;
  }
  if (await dockerAnswers()) {
    const { GenericContainer, Wait } = await import('testcontainers');
    const container = await new GenericContainer('redis:7').withExposedPorts(6379).withWaitStrategy(Wait.forLogMessage('Ready to accept connections')).start();
    stopContainer = () => container.stop();
    process.env.REDIS_URL = `redis://${container.getHost()}:${container.getMappedPort(6379)}`;
    console.log(`tests use a Redis container at ${process.env.REDIS_URL}`);
    return;
  }
  throw new Error(
    'no Redis for the tests: set REDIS_URL, start redis-server on 127.0.0.1:6379 (bash .ci/run does), or run a Docker engine',
  );
}

export async function teardown(): Promise<void> {
  await stopContainer?.();
}
