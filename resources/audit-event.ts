import type { AuditEvent, Coding, Reference, Resource } from 'fhir/r4';
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
  // An auditor's and an access report's question: this patient's events, newest first, from a
  // date. `date` is `AuditEvent.recorded`, exactly one instant per event.
  referenceDatePairs: [{ reference: 'patient', date: 'date' }],
};

const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';

/** Whether an agent's `who` or an entity's `what` (with its role) stands for a patient: typed `Patient`, or in BALP's patient role (object-role#1). */
export function standsForPatient(ref: Reference, role?: Coding): boolean {
  return ref.type === 'Patient' || (role?.system === OBJECT_ROLE && role.code === '1');
}

/**
 * Whether the event names a patient by identifier (system and value), with a reference or not.
 * An audit source's event that does is placed on the patient's trail by the server
 * (server/interactions/audit-patients.ts), and is no longer the source's to read whether or not
 * the patient was found (consent/decide.ts), so that reading it back does not tell which.
 */
export function namesPatientByIdentifier(event: AuditEvent): boolean {
  return namesPatientBy(event, (ref) => !!ref.identifier?.system && !!ref.identifier.value);
}

/**
 * Whether the event names a patient by identifier that the server could not place (no reference
 * beside it: none or several Patients had it). Such a patient is someone else to every reader
 * but auditors, like a second patient in one event: shown to a reader, the event would tell
 * which identifiers this server holds (found, it would name that patient instead).
 */
export function namesUnplacedPatient(event: AuditEvent): boolean {
  return namesPatientBy(event, (ref) => !ref.reference && !!ref.identifier?.system && !!ref.identifier.value);
}

function namesPatientBy(event: AuditEvent, test: (ref: Reference) => boolean): boolean {
  const named = (ref: Reference | undefined, role?: Coding) => !!ref && test(ref) && standsForPatient(ref, role);
  return (event.agent ?? []).some((a) => named(a.who)) || (event.entity ?? []).some((e) => named(e.what, e.role));
}
