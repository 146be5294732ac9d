import { freezeContext, type AccessContext } from './context';
import { isA } from './purpose';
import type { ClientRegistry } from './registry';
import { grant } from './scopes';

/**
 * The part of a request's AccessContext that work done later on its behalf keeps (an export
 * job, a Subscription's deliveries): who asked, with which granted scopes and purpose.
 */
export interface StoredContext {
  readonly clientId: string;
  readonly scopes: readonly string[];
  readonly purposeOfUse: string;
  readonly practitioner?: string;
  readonly patient?: string;
  /** The client's network address when it asked (for the audit trail). */
  readonly address?: string;
  /** The registered key the client's token was obtained with: taken out of the registry, it stops the work. */
  readonly clientKey?: string;
  /** The request that started the work, and the base URL it was made to. */
  readonly requestId: string;
  readonly baseUrl: string;
}

export function storeContext(ctx: AccessContext, baseUrl: string): StoredContext {
  return {
    baseUrl,
    clientId: ctx.clientId!,
    scopes: [...ctx.scopes],
    purposeOfUse: ctx.purposeOfUse,
    ...(ctx.practitioner ? { practitioner: ctx.practitioner } : {}),
    ...(ctx.patient ? { patient: ctx.patient } : {}),
    ...(ctx.address ? { address: ctx.address } : {}),
    ...(ctx.clientKey ? { clientKey: ctx.clientKey } : {}),
    requestId: ctx.requestId,
  };
}

/**
 * Background work runs only for clients of the registry, holding a token this server issued
 * (only those carry the client's registered purposes) and bound to one of its registered keys, so
 * that their standing, key included, can be checked again whenever the work runs. A trusted
 * issuer's token naming the same client id is not enough, nor a token from before tokens were
 * bound (the client fetches a new one).
 */
export function mayWorkInBackground(ctx: AccessContext, registry: ClientRegistry): boolean {
  if (ctx.clientId === null || ctx.registeredPurposes === undefined || ctx.clientKey === undefined) return false;
  const client = registry.get(ctx.clientId);
  return client !== undefined && client.keyThumbprints.has(ctx.clientKey);
}

/**
 * Why this request may not start, see, change or fetch background work (an export, a
 * Subscription), or undefined when it may: the client must be one of the registry's, with a
 * token this server issued (mayWorkInBackground), and not for break-the-glass. Break-the-glass
 * opens one patient's record in an emergency; carried into an export or a Subscription, it would
 * open every patient's record at once, whatever their custodians and Consents say (only a
 * Consent that denies break-the-glass in so many words stands against it).
 */
export function backgroundRefusal(ctx: AccessContext, registry: ClientRegistry, what: string): string | undefined {
  if (!mayWorkInBackground(ctx, registry)) return `${what} are for clients registered with this server, using a token it issued with one of their registered keys`;
  if (isA(ctx.purposeOfUse, 'ETREAT')) return `${what} cannot be for break-the-glass (${ctx.purposeOfUse}): it opens one patient's record in an emergency, never many at once`;
  return undefined;
}

/**
 * The AccessContext for a piece of background work, as the client stands now: a client that has
 * left the registry gets none (the work stops), and its organisation, roles and the scopes it may
 * still be granted come from the registry as it is now, not as it was when the work was asked for.
 */
export function backgroundContext(registry: ClientRegistry, stored: StoredContext, requestId: string): AccessContext | undefined {
  const client = registry.get(stored.clientId);
  if (!client) return undefined;
  if (!client.purposes.includes(stored.purposeOfUse)) return undefined;
  // Work stored for break-the-glass (before backgroundRefusal refused it) does not run, nor serve files.
  if (isA(stored.purposeOfUse, 'ETREAT')) return undefined;
  // Work asked for with a key since taken out of the registry (rotated after a leak, or the client
  // re-added with new keys) stops with it. Work stored before tokens were bound names no key.
  if (stored.clientKey !== undefined && !client.keyThumbprints.has(stored.clientKey)) return undefined;
  return freezeContext({
    requestId,
    clientId: client.clientId,
    clientName: client.name,
    organization: client.organization,
    roles: client.roles,
    scopes: grant(stored.scopes, client.scopes),
    purposeOfUse: stored.purposeOfUse,
    registeredPurposes: client.purposes,
    ...(stored.practitioner ? { practitioner: stored.practitioner } : {}),
    ...(stored.address ? { address: stored.address } : {}),
    ...(stored.clientKey ? { clientKey: stored.clientKey } : {}),
  });
}
