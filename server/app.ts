import express, { type Express } from 'express';
import { authenticate } from './access/authenticate';
import type { SigningKey } from './access/keys';
import type { ClientRegistry } from './access/registry';
import { scopePolicy } from './access/scope-policy';
import { TokenService, type TrustedIssuer } from './access/tokens';
import { holdResponses } from './audit/hold';
import { AuditTrail } from './audit/trail';
import { AuditWriter } from './audit/writer';
import type { Config } from './config';
import { FhirError } from './errors';
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
import { healthRoutes } from './http/routes/health';
import { resourceRoutes } from './http/routes/resources';
import { smartRoutes } from './http/routes/smart';
import { systemRoutes } from './http/routes/system';
import { createLogger, type Logger } from './log';
import type { Store } from './store/store';
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
}

/** Who may get tokens, and the key the server signs them with. */
export interface AccessSetup {
  readonly registry: ClientRegistry;
  readonly key: SigningKey;
  readonly trusted?: readonly TrustedIssuer[];
}

export interface App {
  readonly express: Express;
  readonly gate: Gate;
  readonly tokens: TokenService;
  /**
   * Graceful shutdown, once the server stops accepting connections: resolves when every request
   * begun has ended, its AuditEvents committed (clients that hung up included). From the call on,
   * responses close their keep-alive connections.
   */
  drain(): Promise<void>;
  /** Resolves when every AuditEvent handed to the writer is committed (shutdown waits for it). */
  drainAudit(): Promise<void>;
}

/**
 * Builds the HTTP application from explicit dependencies (no globals): the request pipeline is
 * in-flight count → request id → request log → base URL → audit hold → content negotiation →
 * body → authentication (AccessContext) → routes → one error mapper.
 */
export function buildApp(options: AppOptions): App {
  const now = options.now ?? Date.now;
  const logger = options.logger ?? createLogger(options.config.logLevel, now);
  const facts = new PatientFactsCache(options.store.reader);
  const consent = options.policy ?? new ConsentPolicy(facts, { defaultPolicy: options.config.consentDefault, now });
  const writer = options.config.benchUnaudited ? undefined : new AuditWriter(options.store);
  if (!writer) logger.error('CUSTODIAN_BENCH_UNAUDITED=1: the audit trail is OFF. This setting exists for benchmarks only.');
  const trail = new AuditTrail(writer, now);
  const gate = new Gate(options.store, allOf(scopePolicy, consent), facts, trail);
  const tokens = new TokenService({
    key: options.access.key,
    registry: options.access.registry,
    lifetime: options.config.auth.tokenLifetime,
    now,
    replay: (key, expiresAt) => options.store.rememberAssertion(key, expiresAt),
    trusted: options.access.trusted ?? [],
  });
  const deps: HttpDeps = { config: options.config, gate, validator: options.validator ?? sharedValidator(), now, logger, registry: options.access.registry, audit: { writer } };

  const inFlight = new InFlight();
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.set('trust proxy', false);

  app.use(inFlight.track);
  app.use(requestId);
  app.use(requestLog(logger));
  app.use(baseUrl(options.config));
  app.use(holdResponses(trail, logger));
  app.use(negotiate);
  app.use(bodyParser(options.config.maxBodyBytes));
  app.use(authenticate(tokens, options.config.baseUrl));
  app.use((_req, res, next) => {
    const audit = res.locals.audit;
    if (audit && res.locals.ctx) trail.attach(res.locals.ctx, audit);
    next();
  });
  app.use(healthRoutes(() => options.store.probeWrite(), writer, () => options.store.auditIndex.backlog()));
  app.use(smartRoutes(tokens, options.access.key, options.config.baseUrl));
  app.use(systemRoutes(deps));
  app.use(resourceRoutes(deps));
  app.use((req) => {
    throw new FhirError('not-found', `No route for ${req.method} ${req.path}`);
  });
  app.use(errorHandler(logger));
  return { express: app, gate, tokens, drain: () => inFlight.drain(), drainAudit: () => writer?.drained() ?? Promise.resolve() };
}
