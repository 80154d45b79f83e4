/** The web process (`npm run start:web`, Procfile `web:`): the HTTP API alone; workers run elsewhere. */
import { loadConfigOrExit, runService, SHUTDOWN_GRACE_MS } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { createApp } from './app.js';
import { DRAIN_MS, listen, type HttpServer } from './server.js';
import { startWebServices, type WebServices } from './services.js';

const config = loadConfigOrExit('kyozo web');
const log = createLogger(config.logLevel).child({ component: 'web' });

let services: WebServices | undefined;
let server: HttpServer | undefined;
runService({
  name: 'kyozo web',
  log,
  deadlineMs: DRAIN_MS + SHUTDOWN_GRACE_MS,
  async start(aborted) {
    services = await startWebServices({ config, log, signal: aborted });
    aborted.throwIfAborted();
    server = await listen(createApp(services.deps), config, log, services.deps.metrics);
    log.info({ url: server.url, stores: config.stores.map((store) => `${store.name}:${store.kind}`) }, 'web ready');
  },
  async stop() {
    await server?.close();
    await services?.close();
  },
});
