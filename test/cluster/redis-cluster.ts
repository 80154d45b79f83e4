/**
 * A throwaway Redis Cluster on loopback: three `redis-server --cluster-enabled yes` masters on free ports, joined
 * with `redis-cli --cluster create`, in a temp directory removed by `stop()`. Each node gets its bus port
 * explicitly (`--cluster-port`): the default port + 10000 can fall outside 1..65535 for an ephemeral port.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, redisCli, startRedisServer, until, type RedisServer } from './redis-server.js';

const run = promisify(execFile);

export interface RedisCluster {
  /** `host:port,...`, the value of `REDIS_CLUSTER_NODES`. */
  nodes: string;
  ports: number[];
  stop(): Promise<void>;
}

export async function startRedisCluster(size = 3): Promise<RedisCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kyozo-cluster-'));
  const servers: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < size; i++) {
      const busPort = await freePort();
      // Each node's config file is named after a port of its own, so the nodes can share the directory.
      const configFile = path.join(dir, `nodes-${busPort}.conf`);
      servers.push(await startRedisServer(['--cluster-enabled', 'yes', '--cluster-port', String(busPort), '--cluster-config-file', configFile], dir));
    }
    const ports = servers.map((server) => server.port);
    await run('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes'], {
      timeout: 60_000,
    });
    // Every node must agree before a client fetches the slot map from any of them.
    for (const port of ports) await until(async () => (await redisCli(port, 'cluster', 'info')).includes('cluster_state:ok'), `cluster_state:ok on ${port}`);
  } catch (error) {
    await stop();
    throw error;
  }
  const ports = servers.map((server) => server.port);
  return { nodes: ports.map((port) => `127.0.0.1:${port}`).join(','), ports, stop };
}
