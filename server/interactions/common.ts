import { randomUUID } from 'node:crypto';
import type { Resource } from 'fhir/r4';
import { definitions, type Interaction, type ResourceType } from '../../resources';
import { FhirError } from '../errors';
import type { StoredVersion } from '../store/records';
import { parseSearch, wholeValueStrings } from '../search/parse';
import { compileFilter } from '../search/sql';
import type { ResourceFilter } from '../search/filter';
import type { Validator } from '../validation/validate';

/** What the interaction functions need besides the gated transaction. */
export interface InteractionEnv {
  readonly validator: Validator;
  readonly now: () => number;
  /** Base URL of the request, for recognising absolute references to this server. */
  readonly baseUrl: string;
  readonly maxCount: number;
}

/** The result of one write interaction, before it is turned into an HTTP response or a Bundle entry. */
export interface WriteResult {
  /** 200 or 201 (or 204 for deletes). */
  readonly status: 200 | 201 | 204;
  readonly version?: StoredVersion;
  /** Informational text for Prefer: return=OperationOutcome and no-op deletes. */
  readonly message: string;
  /**
   * The written resource is not returned, whatever the client prefers (`message` is, as an
   * OperationOutcome): it holds what the server found that the client may not learn (an audit
   * source's event placed on a patient's trail by identifier, interactions/audit-patients.ts).
   */
  readonly withheld?: boolean;
}

/** 405 unless the type supports the interaction. */
export function assertInteraction(type: ResourceType, interaction: Interaction): void {
  if (!definitions[type].interactions.includes(interaction)) {
    throw new FhirError('method-not-allowed', `${interaction} is not supported for ${type}${type === 'AuditEvent' ? ' (the audit trail is append-only)' : ''}`, {
      headers: { Allow: allowedMethods(type, interaction.startsWith('history') || ['read', 'vread', 'update', 'patch', 'delete'].includes(interaction) ? 'instance' : 'type') },
    });
  }
}

/** The HTTP methods allowed on a type or instance URL (for the Allow header of a 405). */
export function allowedMethods(type: ResourceType, level: 'type' | 'instance'): string {
  const i = definitions[type].interactions;
  const methods = level === 'instance'
    ? ['GET', ...(i.includes('update') ? ['PUT'] : []), ...(i.includes('patch') ? ['PATCH'] : []), ...(i.includes('delete') ? ['DELETE'] : [])]
    : ['GET', 'POST', ...(i.includes('update') ? ['PUT'] : []), ...(i.includes('delete') ? ['DELETE'] : [])];
  return methods.join(', ');
}

/** The body as a resource of `type`: a JSON object with the right resourceType, or 400. */
export function asResource(type: ResourceType, body: unknown): Resource {
  if (body === undefined) throw new FhirError('invalid-request', `A ${type} resource is required in the body`);
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new FhirError('invalid-resource', 'The body must be a JSON object (a FHIR resource)');
  const declared = (body as { resourceType?: unknown }).resourceType;
  if (declared !== type) {
    throw new FhirError('invalid-resource', `The body's resourceType is ${JSON.stringify(declared)} but the URL is for ${type}`, { expression: [`${type}.resourceType`] });
  }
  return body as Resource;
}

/** A fresh server-assigned id. */
export function newId(): string {
  return randomUUID();
}

/**
 * Criteria of a conditional create/update/delete, parsed strictly: an unknown or ignored
 * parameter would widen the match to resources the client did not mean, so it is a 400.
 */
export function conditionalFilter(type: ResourceType, query: string, env: InteractionEnv): ResourceFilter {
  const pairs = [...new URLSearchParams(query.replace(/^\?/, '')).entries()].filter(([k]) => k !== '_format' && k !== '_pretty');
  // Criteria also arrive in headers and Bundle entries, not only in checked URLs.
  if (pairs.some(([k, v]) => /[\u0000-\u001F\u007F]/.test(k + v))) throw new FhirError('invalid-request', 'The conditional criteria contain a control character');
  if (pairs.length === 0) throw new FhirError('invalid-request', 'A conditional interaction needs at least one search criterion');
  // A search ignores an empty parameter; here that would match more than the client wrote
  // (`identifier=&family=Smith` overwriting the one Smith), so it is a 400 like any other.
  const empty = pairs.find(([, v]) => v === '');
  if (empty) throw new FhirError('invalid-request', `Conditional criterion '${empty[0]}' has no value`, { expression: [empty[0]] });
  const parsed = parseSearch(type, pairs, { strict: true, defaultCount: 2, maxCount: env.maxCount, baseUrl: env.baseUrl, now: env.now() });
  if (parsed.criteria.length === 0) throw new FhirError('invalid-request', 'A conditional interaction needs at least one search criterion');
  return compileFilter(wholeValueStrings(parsed.criteria), env.now());
}

/** Server-managed meta elements are the server's; the client's values are dropped. */
export function withoutServerMeta(resource: Resource): Resource {
  if (!resource.meta) return resource;
  const { versionId: _v, lastUpdated: _l, ...meta } = resource.meta;
  return Object.keys(meta).length ? { ...resource, meta } : (({ meta: _m, ...rest }) => rest as Resource)(resource);
}
