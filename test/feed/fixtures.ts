import type { Resource } from 'fhir/r4';
import { repoJson } from '../support/fixtures';

export const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
export const org = (code: string) => ({ identifier: { system: ODS, value: code } });
export const OPT_OUT_CATEGORY = 'https://custodian.example.org/fhir/CodeSystem/consent-category|national-data-opt-out';

/** Custodian's national data opt-out example (profiles/examples), for `patientId`. */
export function nationalOptOut(patientId: string): Resource {
  const { id: _id, ...rest } = repoJson<Record<string, unknown>>('profiles', 'examples', 'Consent-example-national-data-opt-out.json');
  return { ...rest, patient: { reference: `Patient/${patientId}` } } as unknown as Resource;
}
