import type { Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import type { GatedTx } from '../gate/gate';
import { asResource, assertInteraction, conditionalFilter, newId, withoutServerMeta, type InteractionEnv, type WriteResult } from './common';

/**
 * create (http://hl7.org/fhir/R4/http.html#create): the server assigns the id (a client id in
 * the body is ignored, as the spec allows) and version 1. With `If-None-Exist`, an existing
 * match is returned instead (200), and several matches are a 412.
 */
export async function createResource(
  tx: GatedTx,
  env: InteractionEnv,
  type: ResourceType,
  body: unknown,
  ifNoneExist?: string,
  /** An id decided beforehand (transactions assign ids before rewriting references). */
  assignedId?: string,
): Promise<WriteResult> {
  assertInteraction(type, 'create');
  const resource = asResource(type, body);
  if (ifNoneExist !== undefined) {
    const filter = conditionalFilter(type, ifNoneExist, env);
    // Serialise conditional creates with the same criteria, so two cannot both create.
    await tx.lockKey(`create:${type}?${ifNoneExist}`);
    const matches = await tx.match(type, filter, 'create');
    if (matches.length > 1) throw new FhirError('precondition-failed', `If-None-Exist matched more than one ${type}`);
    if (matches.length === 1) return { status: 200, version: matches[0], message: `${type}/${matches[0].id} already exists; nothing was created` };
  }
  // Validated as sent (a malformed id is bad input even though create replaces it).
  env.validator.assertValid(type, withoutServerMeta(resource));
  const fresh: Resource = { ...withoutServerMeta(resource), id: assignedId ?? newId() };
  const version = await tx.create(type, fresh);
  return { status: 201, version, message: `Created ${type}/${version.id}` };
}
