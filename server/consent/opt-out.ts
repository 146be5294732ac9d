import type { Consent } from 'fhir/r4';

/**
 * The two objections to secondary use Custodian recognises (profiles
 * `custodian-national-data-opt-out` and `custodian-type-1-objection` in profiles/): a privacy
 * Consent categorised with one of these codes.
 */
export const CONSENT_CATEGORY_SYSTEM = 'https://custodian.example.org/fhir/CodeSystem/consent-category';
export const NATIONAL_OPT_OUT = 'national-data-opt-out';
export const TYPE_1_OBJECTION = 'type-1-objection';
/** SNOMED CT 827241000000103 |Dissent from secondary use of general practitioner patient identifiable data (finding)|, the GP record's Type 1 code. */
const SNOMED_TYPE_1 = { system: 'http://snomed.info/sct', code: '827241000000103' };

export function objectionKind(c: Consent): 'national-opt-out' | 'type-1-objection' | undefined {
  for (const cc of c.category ?? []) {
    for (const coding of cc.coding ?? []) {
      if (coding.system === CONSENT_CATEGORY_SYSTEM && coding.code === NATIONAL_OPT_OUT) return 'national-opt-out';
      if (coding.system === CONSENT_CATEGORY_SYSTEM && coding.code === TYPE_1_OBJECTION) return 'type-1-objection';
      if (coding.system === SNOMED_TYPE_1.system && coding.code === SNOMED_TYPE_1.code) return 'type-1-objection';
    }
  }
  return undefined;
}
