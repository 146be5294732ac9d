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
