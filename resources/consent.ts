import type { Consent, Resource } from 'fhir/r4';
import { patientIdOf, type ResourceDefinition } from './definition';

/** Consent: belongs to the patient it is about (`Consent.patient`). */
export const consent: ResourceDefinition = {
  type: 'Consent',
  interactions: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'],
  profile: 'https://custodian.example.org/fhir/StructureDefinition/custodian-consent',
  patientIds: (resource: Resource) => {
    const id = patientIdOf((resource as Consent).patient);
    return id ? [id] : [];
  },
  codeSystems: {
    status: 'http://hl7.org/fhir/consent-state-codes',
  },
};
