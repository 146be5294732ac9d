import type { AuditEvent, Resource } from 'fhir/r4';
import { patientIdOf, type ResourceDefinition } from './definition';

/**
 * AuditEvent: append-only (no update, patch or delete). It belongs to every patient named as
 * an agent or an entity, the same rule as the R4 `AuditEvent-patient` search parameter.
 */
export const auditEvent: ResourceDefinition = {
  type: 'AuditEvent',
  interactions: ['read', 'vread', 'history-instance', 'history-type', 'create', 'search-type'],
  profile: 'https://custodian.example.org/fhir/StructureDefinition/custodian-auditevent',
  patientIds: (resource: Resource) => {
    const event = resource as AuditEvent;
    const ids = new Set<string>();
    for (const agent of event.agent ?? []) {
      const id = patientIdOf(agent.who);
      if (id) ids.add(id);
    }
    for (const entity of event.entity ?? []) {
      const id = patientIdOf(entity.what);
      if (id) ids.add(id);
    }
    return [...ids];
  },
  codeSystems: {
    action: 'http://hl7.org/fhir/audit-event-action',
    outcome: 'http://hl7.org/fhir/audit-event-outcome',
  },
};
