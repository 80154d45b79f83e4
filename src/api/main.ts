/** The web process (`npm run start:web`, Procfile `web:`): the HTTP API alone; workers run elsewhere. */
import { loadConfigOrExit, SHUTDOWN_GRACE_MS, shutdownOnSignals } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { createApp } from './app.js';
import { DRAIN_MS, listen, type HttpServer } from './server.js';
import { startWebServices, type WebServices } from './services.js';

const config = loadConfigOrExit('kyozo web');
const log = createLogger(config.logLevel).child({ component: 'web' });

let services: WebServices | undefined;
let server: HttpServer | undefined;
// Before the start, so that a signal during it closes what it opened.
const stopAfterFailure = shutdownOnSignals(
  async () => {
    await starting;
    await server?.close();
    await services?.close();
  },
  { log, deadlineMs: DRAIN_MS + SHUTDOWN_GRACE_MS },
);
const starting = (async () => {
  services = await startWebServices({ config, log });
  server = await listen(createApp(services.deps), config, log);
  log.info({ url: server.url, stores: config.stores.map((store) => `${store.name}:${store.kind}`) }, 'web ready');
})().catch((error: unknown) => {
  console.error(`kyozo web: cannot start: ${error instanceof Error ? error.message : String(error)}`);
  stopAfterFailure(1);
});
