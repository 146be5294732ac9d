import type { AuditEvent, Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import type { GatedTx } from '../gate/gate';
import { placeOnPatientTrails } from './audit-patients';
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
  let fresh: Resource = { ...withoutServerMeta(resource), id: assignedId ?? newId() };
  let withheld = false;
  if (type === 'AuditEvent') {
    assertRecordedNotAhead(resource, env.now());
    // Placed only for whom the create is for (the scope checked now, the role the write's own
    // check refuses without): nobody else gets a lookup made, or a refusal on the patient's trail.
    tx.reads.allow(tx.ctx, 'AuditEvent', 'create');
    if (tx.ctx.roles.includes('audit-source')) {
      const placed = await placeOnPatientTrails(tx, env, fresh as AuditEvent);
      fresh = placed.event;
      withheld = placed.byIdentifier;
    }
  }
  const version = await tx.create(type, fresh);
  if (withheld) {
    const why = 'it names a patient by identifier, and this answer does not say whether this server holds that patient';
    return { status: 201, version, message: `Created ${type}/${version.id}; not returned: ${why}`, withheld };
  }
  return { status: 201, version, message: `Created ${type}/${version.id}` };
}

/** How far ahead of this server's clock an AuditEvent's `recorded` may be (clocks drift). */
export const RECORDED_SKEW_MS = 5 * 60_000;

/**
 * An AuditEvent (an audit source's, POSTed) may not be recorded in the future: `$access-report`
 * lists a patient's events newest first, and events dated ahead would push real accesses out of
 * it. Found by a second reading (stop 22): five events dated 9999 hid a refused read.
 */
function assertRecordedNotAhead(resource: Resource, now: number): void {
  const text = (resource as AuditEvent).recorded;
  const recorded = Date.parse(text ?? '');
  if (Number.isFinite(recorded) && recorded > now + RECORDED_SKEW_MS) {
    throw new FhirError('unprocessable', `AuditEvent.recorded (${text}) is ahead of this server's clock by more than ${RECORDED_SKEW_MS / 60_000} minutes`, { expression: ['AuditEvent.recorded'] });
  }
}
