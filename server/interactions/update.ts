import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import type { GatedTx } from '../gate/gate';
import { createResource } from './create';
import { asResource, assertInteraction, conditionalFilter, withoutServerMeta, type InteractionEnv, type WriteResult } from './common';

/**
 * update (http://hl7.org/fhir/R4/http.html#update): the body's id must equal the URL's; a new
 * id creates the resource with it (update as create, 201), as does an update of a deleted one. `If-Match` makes it a version-aware
 * update: any other current version is a 412, so concurrent writers never lose a version.
 */
export async function updateResource(
  tx: GatedTx,
  env: InteractionEnv,
  type: ResourceType,
  id: string,
  body: unknown,
  ifMatch?: number,
): Promise<WriteResult> {
  assertInteraction(type, 'update');
  const resource = asResource(type, body);
  if (resource.id === undefined) throw new FhirError('id-mismatch', `The body has no id; an update of ${type}/${id} must carry "id": "${id}"`, { expression: [`${type}.id`] });
  if (resource.id !== id) throw new FhirError('id-mismatch', `The body's id '${resource.id}' does not match the URL id '${id}'`, { expression: [`${type}.id`] });
  const next = withoutServerMeta(resource);
  env.validator.assertValid(type, next);
  let current = await tx.current(type, id, 'update');
  if (!current) {
    // Two clients creating the same id at once: the second waits here and then updates.
    await tx.lockKey(`${type}/${id}`);
    current = await tx.current(type, id, 'update');
  }
  if (ifMatch !== undefined && (!current || current.versionId !== ifMatch)) {
    throw new FhirError('precondition-failed', current ? `If-Match W/"${ifMatch}" does not match the current version W/"${current.versionId}" of ${type}/${id}` : `If-Match given but ${type}/${id} does not exist`);
  }
  if (!current) {
    const version = await tx.create(type, next);
    return { status: 201, version, message: `Created ${type}/${id}` };
  }
  const version = await tx.update(current, next, 'PUT');
  // Bringing a deleted resource back creates it anew (http://hl7.org/fhir/R4/http.html#update: 201 when created).
  if (current.deleted) return { status: 201, version, message: `Created ${type}/${id} again (version ${version.versionId}) after its deletion` };
  return { status: 200, version, message: `Updated ${type}/${id} to version ${version.versionId}` };
}

/**
 * Conditional update (http://hl7.org/fhir/R4/http.html#cond-update): no match creates, one
 * match is updated, several are a 412. Only resources the client may see can match.
 */
export async function conditionalUpdate(
  tx: GatedTx,
  env: InteractionEnv,
  type: ResourceType,
  query: string,
  body: unknown,
  ifMatch?: number,
): Promise<WriteResult> {
  assertInteraction(type, 'update');
  const resource = asResource(type, body);
  const filter = conditionalFilter(type, query, env);
  await tx.lockKey(`update:${type}?${query}`);
  const matches = await tx.match(type, filter, 'update');
  if (matches.length > 1) throw new FhirError('precondition-failed', `The criteria matched more than one ${type}`);
  if (matches.length === 1) {
    const target = matches[0];
    if (resource.id !== undefined && resource.id !== target.id) {
      throw new FhirError('id-mismatch', `The body's id '${resource.id}' is not the id of the matching resource`, { expression: [`${type}.id`] });
    }
    return updateResource(tx, env, type, target.id, { ...resource, id: target.id }, ifMatch);
  }
  if (resource.id !== undefined) return updateResource(tx, env, type, resource.id, resource, ifMatch);
  return createResource(tx, env, type, resource);
}
