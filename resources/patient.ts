import type { Resource } from 'fhir/r4';
import type { ResourceDefinition } from './definition';

/** Patient: the compartment owner itself. */
export const patient: ResourceDefinition = {
  type: 'Patient',
  interactions: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'],
  profile: 'https://custodian.example.org/fhir/StructureDefinition/custodian-patient',
  patientIds: (resource: Resource) => (resource.id ? [resource.id] : []),
  codeSystems: {
    gender: 'http://hl7.org/fhir/administrative-gender',
    'address-use': 'http://hl7.org/fhir/address-use',
  },
};
