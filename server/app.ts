import { randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import { audienceOf, type Audience } from './access/audience';
import { authenticate } from './access/authenticate';
import type { SigningKey } from './access/keys';
import type { ClientRegistry } from './access/registry';
import { scopePolicy } from './access/scope-policy';
import { TokenService, type TrustedIssuer } from './access/tokens';
import { ChainHeadLog } from './audit/head-log';
import { holdResponses } from './audit/hold';
import { AuditTrail } from './audit/trail';
import { AuditWriter } from './audit/writer';
import type { Config } from './config';
import { FhirError } from './errors';
import { CursorSeal } from './gate/cursor';
import { Gate } from './gate/gate';
import { ConsentPolicy } from './consent/policy';
import { PatientFactsCache } from './gate/policy-data';
import { allOf, type AccessPolicy } from './gate/policy';
import { bodyParser } from './http/body';
import type { HttpDeps } from './http/deps';
import { errorHandler } from './http/errors';
import { negotiate } from './http/format';
import { InFlight } from './http/in-flight';
import { baseUrl, requestId, requestLog } from './http/pipeline';
import { checkRequestTarget } from './http/target';
import { healthRoutes } from './http/routes/health';
import { resourceRoutes } from './http/routes/resources';
import { smartRoutes } from './http/routes/smart';
import { systemRoutes } from './http/routes/system';
import { createLogger, type Logger } from './log';
import { Deliverer } from './feed/deliverer';
import { ExportRunner } from './feed/export-runner';
import { ExportGate } from './gate/exports';
import { SubscriptionGate } from './gate/subscriptions';
import { bulkRoutes } from './http/routes/bulk';
import { subscriptionRoutes } from './http/routes/subscriptions';
import { ExportJobs } from './store/exports';
import type { Store } from './store/store';
import { Subscriptions } from './store/subscriptions';
import { sharedValidator, type Validator } from './validation/validate';

export interface AppOptions {
  readonly config: Config;
  readonly store: Store;
  readonly now?: () => number;
  readonly logger?: Logger;
  readonly validator?: Validator;
  /** Replaces the consent policy (scopes are always enforced in front of it); for tests of the layers below. */
  readonly policy?: AccessPolicy;
  readonly access: AccessSetup;
  /** The HTTP client notifications are sent with (default: the global fetch). */
  readonly fetch?: typeof fetch;
}

/** Who may get tokens, and the key the server signs them with. */
export interface AccessSetup {
  readonly registry: ClientRegistry;
  readonly key: SigningKey;
  readonly trusted?: readonly TrustedIssuer[];
  /**
   * The address the server listens at (`http://127.0.0.1:8080`): names the server in tokens when
   * CUSTODIAN_BASE_URL is unset (see access/audience.ts). main.ts passes it once listening.
   */
  readonly listenUrl?: string;
}

export interface App {
  readonly express: Express;
  readonly gate: Gate;
  readonly tokens: TokenService;
  /** Who the server is in tokens and assertions. */
  readonly audience: Audience;
  /**
   * Graceful shutdown, once the server stops accepting connections: resolves when every request
   * begun has ended, its AuditEvents committed (clients that hung up included). From the call on,
   * responses close their keep-alive connections.
   */
  drain(): Promise<void>;
  /** Resolves when every AuditEvent handed to the writer is committed (shutdown waits for it). */
  drainAudit(): Promise<void>;
  /** The national consent feed's background workers: not running until start() (main.ts starts them; tests may drive them step by step). */
  readonly feed: FeedWorkers;
  /** Logs the audit chain's head now and then, to be kept outside the database (main.ts starts it). */
  readonly auditHead: ChainHeadLog;
}

export interface FeedWorkers {
  readonly exports: ExportRunner;
  readonly deliverer: Deliverer;
  start(): void;
  /** Stops both after the step in hand and gives their leases back. */
  stop(): Promise<void>;
}

/**
 * Builds the HTTP application from explicit dependencies (no globals): the request pipeline is
 * in-flight count → request id → request log → base URL → audit hold → request target check →
 * content negotiation → body → authentication (AccessContext) → routes → one error mapper.
 */
export function buildApp(options: AppOptions): App {
  const now = options.now ?? Date.now;
  const logger = options.logger ?? createLogger(options.config.logLevel, now);
  const facts = new PatientFactsCache(options.store.reader);
  const consent = options.policy ?? new ConsentPolicy(facts, { defaultPolicy: options.config.consentDefault, now });
  const writer = options.config.benchUnaudited ? undefined : new AuditWriter(options.store);
  if (!writer) logger.error('CUSTODIAN_BENCH_UNAUDITED=1: the audit trail is OFF. This setting exists for benchmarks only.');
  else if (options.config.benchAuditFloor) logger.error(`CUSTODIAN_BENCH_AUDIT_FLOOR=${options.config.benchAuditFloor}: requests commit no AuditEvent to the trail (SQLite only). This setting exists for benchmarks only.`);
  const policy = allOf(scopePolicy, consent);
  // The national consent feed: the outbox filled in every write transaction, the workers that
  // deliver it and run exports, and the gates they (and the handlers) read through.
  const subscriptions = new Subscriptions(options.store, now);
  const jobs = new ExportJobs(options.store, now);
  const workers: { deliverer?: Deliverer } = {};
  const audience = audienceOf(options.config, options.access.listenUrl);
  // The audit trail names this server by its fixed identity, never by what a request's headers say.
  const trail = new AuditTrail(writer, now, audience.issuer);
  const gate = new Gate(options.store, policy, facts, trail, {
    beforeCommit: (tx, changes) => subscriptions.enqueue(tx.q, changes),
    afterCommit: (changes) => {
      if (changes.some((c) => c.version.type === 'Consent')) workers.deliverer?.nudge();
    },
  });
  const seal = new CursorSeal(options.store.cursorKey, options.store.cutovers.numericFeedCursorsUpTo);
  const exportGate = new ExportGate(options.store.reader, policy, jobs, seal, options.access.registry, trail);
  const subscriptionGate = new SubscriptionGate(options.store.reader, policy, facts, subscriptions, seal);
  const owner = randomUUID();
  const exportRunner = new ExportRunner({ jobs, gate: exportGate, registry: options.access.registry, config: options.config.feed, baseUrl: audience.issuer, now, logger, owner });
  const deliverer = new Deliverer({
    subscriptions,
    gate: subscriptionGate,
    registry: options.access.registry,
    config: options.config.feed,
    audit: writer ? (events) => writer.write(events) : undefined,
    baseUrl: audience.issuer,
    now,
    logger,
    owner,
    fetch: options.fetch,
  });
  workers.deliverer = deliverer;
  const tokens = new TokenService({
    key: options.access.key,
    registry: options.access.registry,
    audience,
    lifetime: options.config.auth.tokenLifetime,
    now,
    replay: (key, expiresAt) => options.store.rememberAssertion(key, expiresAt),
    trusted: options.access.trusted ?? [],
    unboundTokensBefore: options.store.cutovers.unboundTokensBefore,
  });
  const deps: HttpDeps = {
    config: options.config,
    gate,
    validator: options.validator ?? sharedValidator(),
    now,
    logger,
    registry: options.access.registry,
    audience,
    audit: { writer },
    feed: { exports: exportGate, subscriptions: subscriptionGate, nudgeExports: () => exportRunner.nudge() },
  };

  const inFlight = new InFlight();
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // Only the configured proxies' X-Forwarded-For counts (req.ip); by default, the connection's peer.
  app.set('trust proxy', options.config.trustProxy.length ? [...options.config.trustProxy] : false);

  app.use(inFlight.track);
  app.use(requestId);
  app.use(requestLog(logger));
  app.use(baseUrl(options.config));
  app.use(holdResponses(trail, logger));
  app.use(checkRequestTarget);
  app.use(negotiate);
  app.use(bodyParser(options.config.maxBodyBytes));
  app.use(authenticate(tokens, audience));
  app.use((_req, res, next) => {
    const audit = res.locals.audit;
    if (audit && res.locals.ctx) trail.attach(res.locals.ctx, audit);
    next();
  });
  app.use(healthRoutes({ probeWrite: () => options.store.probeWrite(), writer, indexBacklog: () => options.store.auditIndex.backlog(), now, logger }));
  app.use(smartRoutes(tokens, options.access.key, audience, logger));
  app.use(systemRoutes(deps));
  app.use(bulkRoutes(deps));
  app.use(subscriptionRoutes(deps));
  app.use(resourceRoutes(deps));
  app.use((req) => {
    throw new FhirError('not-found', `No route for ${req.method} ${req.path}`);
  });
  app.use(errorHandler(logger));
  const feed: FeedWorkers = {
    exports: exportRunner,
    deliverer,
    start() {
      exportRunner.start();
      deliverer.start();
    },
    async stop() {
      await Promise.all([exportRunner.stop(), deliverer.stop()]);
    },
  };
  const auditHead = new ChainHeadLog(() => gate.auditChainHead(), logger, options.config.auditHeadLogSeconds * 1000);
  return { express: app, gate, tokens, audience, drain: () => inFlight.drain(), drainAudit: () => writer?.drained() ?? Promise.resolve(), feed, auditHead };
}
