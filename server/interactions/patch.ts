import jsonpatch, { type Operation } from 'fast-json-patch';
import type { Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import type { GatedTx } from '../gate/gate';
import { assertInteraction, withoutServerMeta, type InteractionEnv, type WriteResult } from './common';

/**
 * patch with JSON Patch (http://hl7.org/fhir/R4/http.html#patch, RFC 6902). A malformed patch
 * document is a 400; a patch that cannot apply (failed `test`, missing path) is a 422; the
 * patched resource is validated like any update and may not change its id or type.
 */
export async function patchResource(
  tx: GatedTx,
  env: InteractionEnv,
  type: ResourceType,
  id: string,
  patch: unknown,
  ifMatch?: number,
): Promise<WriteResult> {
  assertInteraction(type, 'patch');
  const operations = asPatch(patch);
  const current = await tx.current(type, id, 'patch');
  if (!current) throw new FhirError('not-found', `${type}/${id} is not known`);
  if (current.deleted) throw new FhirError('gone', `${type}/${id} was deleted`);
  if (ifMatch !== undefined && current.versionId !== ifMatch) {
    throw new FhirError('precondition-failed', `If-Match W/"${ifMatch}" does not match the current version W/"${current.versionId}" of ${type}/${id}`);
  }
  let patched: Resource;
  try {
    patched = jsonpatch.applyPatch(structuredClone(current.resource!), operations, true, false, true).newDocument as Resource;
  } catch (err) {
    const e = err as { name?: string; message?: string; index?: number };
    const where = e.index !== undefined ? ` (operation ${e.index})` : '';
    if (e.name === 'TEST_OPERATION_FAILED' || /TEST_OPERATION_FAILED/.test(e.message ?? '')) {
      throw new FhirError('unprocessable', `A test operation of the patch failed${where}`);
    }
    throw new FhirError('unprocessable', `The patch cannot be applied to ${type}/${id}${where}: ${firstLine(e.message)}`);
  }
  if (!patched || typeof patched !== 'object' || Array.isArray(patched)) throw new FhirError('unprocessable', 'The patch does not leave a resource');
  if (patched.resourceType !== type) throw new FhirError('unprocessable', 'A patch may not change resourceType', { expression: [`${type}.resourceType`] });
  if (patched.id !== id) throw new FhirError('unprocessable', 'A patch may not change the id', { expression: [`${type}.id`] });
  const next = withoutServerMeta(patched);
  env.validator.assertValid(type, next);
  const version = await tx.update(current, next, 'PATCH');
  return { status: 200, version, message: `Patched ${type}/${id} to version ${version.versionId}` };
}

function asPatch(patch: unknown): Operation[] {
  if (!Array.isArray(patch)) throw new FhirError('invalid-request', 'A JSON Patch document is a JSON array of operations');
  const error = jsonpatch.validate(patch as Operation[]);
  if (error) throw new FhirError('invalid-request', `Invalid JSON Patch document: ${firstLine(error.message)} (operation ${error.index})`);
  return patch as Operation[];
}

function firstLine(message: string | undefined): string {
  return (message ?? '').split('\n')[0];
}
