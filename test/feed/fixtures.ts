import assert from 'node:assert/strict';
import type { Resource } from 'fhir/r4';
import type { Api } from '../support/api';
import { repoJson } from '../support/fixtures';

export const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
export const org = (code: string) => ({ identifier: { system: ODS, value: code } });
export const OPT_OUT_CATEGORY = 'https://custodian.example.org/fhir/CodeSystem/consent-category|national-data-opt-out';

/** Custodian's national data opt-out example (profiles/examples), for `patientId`. */
export function nationalOptOut(patientId: string): Resource {
  const { id: _id, ...rest } = repoJson<Record<string, unknown>>('profiles', 'examples', 'Consent-example-national-data-opt-out.json');
  return { ...rest, patient: { reference: `Patient/${patientId}` } } as unknown as Resource;
}

/** Starts an export and returns its status URL (as a local path). */
export async function kickOff(api: Api, path: string): Promise<string> {
  const res = await api.get(path, { Prefer: 'respond-async', Accept: 'application/fhir+json' });
  assert.equal(res.status, 202, `${path}: ${res.text}`);
  assert.match(res.headers['content-location'], /^http:\/\/custodian\.test\/fhir\/_export\/[0-9a-f-]{36}$/);
  return res.headers['content-location'].replace('http://custodian.test/fhir', '');
}
