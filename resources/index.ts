import type { Resource } from 'fhir/r4';
import { auditEvent } from './audit-event';
import { consent } from './consent';
import type { ResourceDefinition, ResourceType } from './definition';
import { patient } from './patient';

export * from './definition';

/** Every served resource type, by name. */
export const definitions: Readonly<Record<ResourceType, ResourceDefinition>> = {
  Patient: patient,
  Consent: consent,
  AuditEvent: auditEvent,
};

/** What patientIdsOf needs of a stored version (store/records.ts StoredVersion). */
export interface VersionContent {
  readonly type: ResourceType;
  /** The content; a version read from a row parses it on first use. */
  readonly resource?: Resource;
  /** The stored text of the content, when read from a row. */
  readonly text?: string;
  /** The patients the row stores for the content (patientIds when it was written), when it has them. */
  readonly patients?: readonly string[];
}

/**
 * The local Patients a version's content is about (its type's patientIds): the row's stored
 * patients when it has them, else from the content, parsed if need be. Empty for a deletion.
 */
export function patientIdsOf(v: VersionContent): readonly string[] {
  if (v.patients) return v.patients;
  const resource = v.resource;
  return resource ? definitions[v.type].patientIds(resource) : [];
}

/** Whether a version carries content (is not a deletion), known without parsing it. */
export function hasContent(v: VersionContent): boolean {
  return v.text !== undefined || v.resource !== undefined;
}
