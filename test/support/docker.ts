/** Whether a Docker engine is there for testcontainers: the one probe every test service shares. */
import { existsSync } from 'node:fs';
import http from 'node:http';

/** Whether a Docker engine answers /_ping within a short time (no engine here: an instant "no"). */
export async function dockerAnswers(): Promise<boolean> {
  const host = process.env.DOCKER_HOST;
  const socketPath = host?.startsWith('unix://') ? host.slice('unix://'.length) : host ? undefined : '/var/run/docker.sock';
  if (socketPath !== undefined && !existsSync(socketPath)) return false;
  const target = socketPath !== undefined ? { socketPath } : (() => {
    const url = new URL(host!.replace(/^tcp:/, 'http:'));
    return { host: url.hostname, port: Number(url.port || 2375) };
  })();
  return new Promise((resolve) => {
    const request = http.get({ ...target, path: '/_ping', timeout: 800 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
  });
}
