import express, { type Express } from 'express';
import { anonymousAccess } from './access/middleware';
import type { Config } from './config';
import { FhirError } from './errors';
import { Gate } from './gate/gate';
import { openAccessPolicy, type AccessPolicy } from './gate/policy';
import { bodyParser } from './http/body';
import type { HttpDeps } from './http/deps';
import { errorHandler } from './http/errors';
import { negotiate } from './http/format';
import { baseUrl, requestId } from './http/pipeline';
import { resourceRoutes } from './http/routes/resources';
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
  readonly policy?: AccessPolicy;
}

export interface App {
  readonly express: Express;
  readonly gate: Gate;
}

/**
 * Builds the HTTP application from explicit dependencies (no globals): the request pipeline is
 * request id → base URL → content negotiation → access context → body → routes → one error mapper.
 */
export function buildApp(options: AppOptions): App {
  const now = options.now ?? Date.now;
  const logger = options.logger ?? createLogger(options.config.logLevel, now);
  const gate = new Gate(options.store, options.policy ?? openAccessPolicy);
  const deps: HttpDeps = { config: options.config, gate, validator: options.validator ?? sharedValidator(), now, logger };

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.set('trust proxy', false);

  app.use(requestId);
  app.use(baseUrl(options.config));
  app.use(negotiate);
  app.use(anonymousAccess);
  app.use(bodyParser(options.config.maxBodyBytes));
  app.use(systemRoutes(deps));
  app.use(resourceRoutes(deps));
  app.use((req) => {
    throw new FhirError('not-found', `No route for ${req.method} ${req.path}`);
  });
  app.use(errorHandler(logger));
  return { express: app, gate };
}
