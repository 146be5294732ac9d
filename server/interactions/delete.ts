import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import type { GatedTx } from '../gate/gate';
import { assertInteraction, conditionalFilter, type InteractionEnv, type WriteResult } from './common';

/**
 * delete (http://hl7.org/fhir/R4/http.html#delete): writes a deletion as a new version, so
 * history keeps every version and a later read answers 410 Gone. Deleting an already deleted
 * resource changes nothing (204); an unknown one is a 404.
 */
export async function deleteResource(tx: GatedTx, _env: InteractionEnv, type: ResourceType, id: string, ifMatch?: number): Promise<WriteResult> {
  assertInteraction(type, 'delete');
  const current = await tx.current(type, id, 'delete');
  if (!current) throw new FhirError('not-found', `${type}/${id} is not known`);
  if (ifMatch !== undefined && current.versionId !== ifMatch) {
    throw new FhirError('precondition-failed', `If-Match W/"${ifMatch}" does not match the current version W/"${current.versionId}" of ${type}/${id}`);
  }
  if (current.deleted) return { status: 204, version: current, message: `${type}/${id} was already deleted` };
  const version = await tx.delete(current);
  return { status: 204, version, message: `Deleted ${type}/${id}` };
}

/**
 * Conditional delete (http://hl7.org/fhir/R4/http.html#3.1.0.7.1): one match is deleted, none
 * is a no-op (200 with an OperationOutcome saying so), several are a 412. Only resources the
 * client may see can match.
 */
export async function conditionalDelete(tx: GatedTx, env: InteractionEnv, type: ResourceType, query: string): Promise<WriteResult> {
  assertInteraction(type, 'delete');
  const filter = conditionalFilter(type, query, env);
  const matches = await tx.match(type, filter, 'delete');
  if (matches.length > 1) throw new FhirError('precondition-failed', `The criteria matched more than one ${type}; nothing was deleted`);
  if (matches.length === 0) return { status: 200, message: `No ${type} matched; nothing was deleted` };
  return deleteResource(tx, env, type, matches[0].id);
}
