/** The web process (`npm run start:web`, Procfile `web:`): the HTTP API alone; workers run elsewhere. */
import { loadConfigOrExit, SHUTDOWN_GRACE_MS, shutdownOnSignals } from '../lifecycle.js';
import { createLogger } from '../log.js';
import { createApp } from './app.js';
import { DRAIN_MS, listen } from './server.js';
import { startWebServices } from './services.js';

const config = loadConfigOrExit('kyozo web');
const log = createLogger(config.logLevel).child({ component: 'web' });

try {
  const services = await startWebServices({ config, log });
  const server = await listen(createApp(services.deps), config, log);
  log.info({ url: server.url, stores: config.stores.map((store) => `${store.name}:${store.kind}`) }, 'web ready');
  shutdownOnSignals(
    async () => {
      await server.close();
      await services.close();
    },
    { log, deadlineMs: DRAIN_MS + SHUTDOWN_GRACE_MS },
  );
} catch (error) {
  console.error(`kyozo web: cannot start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
