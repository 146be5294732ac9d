import fs from 'node:fs';
import type { Server } from 'node:http';
import { buildApp } from './app';
import { ConfigError, loadConfig } from './config';
import { createLogger } from './log';
import { Store } from './store/store';

/**
 * Process entry: read the configuration, open (and migrate) the store, listen, and shut down
 * gracefully on SIGTERM/SIGINT: stop accepting connections, let in-flight requests finish,
 * then close the database.
 */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`custodian: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  fs.mkdirSync(config.dataDir, { recursive: true });
  const store = await Store.open(config.database, { now: Date.now, localBase: config.baseUrl });
  const app = buildApp({ config, store, logger });

  const server: Server = app.express.listen(config.port, config.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const base = config.baseUrl ?? `http://${shownHost}:${port}`;
  logger.info('listening', { baseUrl: base, port, database: config.database.dialect });
  process.stdout.write(`Custodian FHIR R4 server listening at ${base} (database: ${config.database.dialect})\n`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal });
    server.close(async () => {
      await store.close().catch((err) => logger.error('closing the store failed', { error: String(err) }));
      logger.info('stopped');
      process.exit(0);
    });
    // Idle keep-alive connections would hold close() open; in-flight requests still finish.
    server.closeIdleConnections();
    setTimeout(() => {
      logger.error('shutdown timed out; exiting');
      process.exit(1);
    }, 15000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`custodian: failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
