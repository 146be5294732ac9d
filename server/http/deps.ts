import type { Request, Response } from 'express';
import type { Audience } from '../access/audience';
import type { ClientRegistry } from '../access/registry';
import type { AuditWriter } from '../audit/writer';
import type { Config } from '../config';
import type { ExportGate } from '../gate/exports';
import type { Gate } from '../gate/gate';
import type { SubscriptionGate } from '../gate/subscriptions';
import type { InteractionEnv } from '../interactions/common';
import type { BundleOptions } from '../interactions/reads';
import type { Logger } from '../log';
import type { Validator } from '../validation/validate';
import { shaped, subsetting } from './format';
import { locals, preferOf } from './request';

/** What the HTTP layer is built from (no store: handlers reach data only through the gate). */
export interface HttpDeps {
  readonly config: Config;
  readonly gate: Gate;
  readonly validator: Validator;
  readonly now: () => number;
  readonly logger: Logger;
  /** Registered clients ($access-decision answers for a named client). */
  readonly registry: ClientRegistry;
  /** Who this server is in OAuth (token endpoint, issuer): fixed, never from a request. */
  readonly audience: Audience;
  readonly audit: { readonly writer: AuditWriter | undefined };
  /** The national consent feed: Bulk Data export and Subscriptions. */
  readonly feed: FeedDeps;
}

export interface FeedDeps {
  readonly exports: ExportGate;
  readonly subscriptions: SubscriptionGate;
  /** A job was queued here: start it now rather than at the next poll. */
  nudgeExports(): void;
}

export function envOf(res: Response, deps: HttpDeps): InteractionEnv {
  return { validator: deps.validator, now: deps.now, baseUrl: locals(res).baseUrl, maxCount: deps.config.search.maxCount };
}

export function bundleOptions(req: Request, res: Response, deps: HttpDeps, path: string): BundleOptions {
  const shape = subsetting(req);
  return {
    baseUrl: locals(res).baseUrl,
    path,
    strict: preferOf(req).handling === 'strict',
    defaultCount: deps.config.search.defaultCount,
    shape: (type, resource) => shaped(type, resource, shape),
  };
}
