import fs from 'node:fs';
import path from 'node:path';
import { createServer, type Server } from 'node:http';
import { listenBaseUrl } from './access/audience';
import { createDemoRegistry } from './access/demo';
import { loadOrCreateSigningKey } from './access/keys';
import { ClientRegistry, RegistryError } from './access/registry';
import { loadTrustedIssuers } from './access/tokens';
import { buildApp } from './app';
import { ConfigError, loadConfig } from './config';
import { createLogger } from './log';
import { Store } from './store/store';

/**
 * libuv's thread pool, where node-sqlite3 runs every statement: 2 threads unless
 * UV_THREADPOOL_SIZE says otherwise. SQLite has one writer and the audit worker's, and these
 * machines two cores; with libuv's default of 4, the threads woken for statements competed with
 * the request thread for the cores (its call into node-sqlite3 that hands a statement over took
 * 35-45 µs under load, 13 µs alone). Measured side by side (30,000-patient store, 50 connections, alternating):
 * GET /Patient/{id} 3,483-3,643 req/s with 4 against 3,698-3,819 with 2, the AuditEvent search
 * 1,097-1,202 against 1,234-1,329, Consent?patient&status 2,197-2,200 against 2,389-2,554; the
 * Consent walk the same. libuv reads the variable when the pool first starts: set before
 * anything queues work on it (the demo registry's key generation does).
 */
const THREAD_POOL_SIZE = '2';

/**
 * Process entry: read the configuration and the client registry (creating demo clients on a
 * first start), open (and migrate) the store, listen, and shut down gracefully on
 * SIGTERM/SIGINT: stop accepting connections, let in-flight requests finish (their AuditEvents
 * committed), then close the database.
 */
async function main(): Promise<void> {
  if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = THREAD_POOL_SIZE;
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(`configuration error: ${err.message}`, 2);
    throw err;
  }
  const logger = createLogger(config.logLevel);
  fs.mkdirSync(config.dataDir, { recursive: true });

  if (!fs.existsSync(config.auth.clientsFile) && !process.env.CUSTODIAN_CLIENTS) {
    const lines = await createDemoRegistry(config.auth.clientsFile, path.join(config.dataDir, 'keys'));
    process.stdout.write(lines.join('\n') + '\n');
  }
  let registry: ClientRegistry;
  try {
    registry = ClientRegistry.load(config.auth.clientsFile);
  } catch (err) {
    if (err instanceof RegistryError) fail(`client registry error: ${err.message}`, 2);
    throw err;
  }
  const { key, created } = await loadOrCreateSigningKey(config.auth.signingKeyFile);
  if (created) logger.info('generated the token signing key', { file: config.auth.signingKeyFile, kid: key.kid });
  let trusted;
  try {
    trusted = loadTrustedIssuers(config.auth.trustedIssuersFile);
  } catch (err) {
    fail(`trusted issuers error: ${(err as Error).message}`, 2);
  }

  const store = await Store.open(config.database, { now: Date.now, localBase: config.baseUrl, benchAuditFloor: config.benchAuditFloor });
  opened = store;
  // A failure nothing caught ends the process, as it would by default, with the audit worker halted first.
  for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
    process.on(event, (err: unknown) => {
      process.stderr.write(`custodian: ${event}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      exit(1);
    });
  }
  // Listen first: without CUSTODIAN_BASE_URL the server names itself in tokens by the address it
  // listens at (PORT=0 is known only now). The app is attached before any request can be read.
  const server: Server = createServer();
  server.listen(config.port, config.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const listening = listenBaseUrl(config.host, port);
  const app = buildApp({ config, store, logger, access: { registry, key, trusted, listenUrl: listening } });
  server.on('request', app.express);
  app.feed.start();
  app.auditHead.start();
  const stopWatching = registry.watch((result) => {
    if (result.ok) logger.info('client registry reloaded', { file: registry.file, clients: result.count });
    else logger.error('client registry change refused; the previous clients stay in force', { error: result.error });
  });
  if (!config.baseUrl && (config.host === '0.0.0.0' || config.host === '::')) {
    logger.error(`CUSTODIAN_BASE_URL is not set and HOST=${config.host}: tokens name this server ${app.audience.issuer}, so clients on other machines cannot use them; set CUSTODIAN_BASE_URL to the URL clients use`);
  }
  logger.info('listening', { address: listening, issuer: app.audience.issuer, baseUrl: config.baseUrl ?? '(from each request, for links)', database: config.database.dialect, clients: registry.all().length });
  process.stdout.write(
    `Custodian FHIR R4 server listening at ${listening}${config.baseUrl ? ` (public base URL ${config.baseUrl})` : ''} (database: ${config.database.dialect}; ${registry.all().length} clients in ${config.auth.clientsFile})\n`,
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal });
    stopWatching();
    // Exports and deliveries stop after the step in hand and hand their leases back.
    const workers = app.feed.stop().catch((err) => logger.error('stopping the feed workers failed', { error: String(err) }));
    setTimeout(() => {
      logger.error('shutdown timed out; exiting');
      exit(1);
    }, 15000).unref();
    // No new connections; idle keep-alive ones close now, busy ones after their response.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    // A $verify under way would hold the shutdown for as long as its walk takes: it answers 503.
    await store.verifier.close();
    // Every request begun finishes, its AuditEvents committed, before the database closes: a
    // client that hung up leaves its request (and its audit commit) still running.
    await app.drain();
    // Nothing is in flight, so whatever connection is still open is idle.
    server.closeAllConnections();
    await closed;
    await workers;
    await app.drainAudit();
    await app.auditHead.stop();
    await store.close().catch((err) => logger.error('closing the store failed', { error: String(err) }));
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

/** The store, once open: a process that exits without closing it halts its audit worker first (Store.halt). */
let opened: Store | undefined;

/** Exits with `code`, the store's audit worker halted first if it is open (Store.halt says why). */
function exit(code: number): void {
  if (!opened) process.exit(code);
  void opened.halt().finally(() => process.exit(code));
}

function fail(message: string, code: number): never {
  process.stderr.write(`custodian: ${message}\n`);
  process.exit(code);
}

main().catch((err) => {
  process.stderr.write(`custodian: failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  exit(1);
});
