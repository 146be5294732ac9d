import type { ResourceType } from '../../resources';
import { isA } from '../access/purpose';
import type { Decision } from './decision';
import { isBreakGlassPurpose } from './purposes';

/**
 * What a refused client is told. A Decision carries the reason and the Consents that decided,
 * for the audit trail and for `$access-decision` (whose audience is the patient's custodian,
 * auditors and the patient); the client that was refused learns only what it already knows or
 * may know: that it is refused, and one of these categories, none of which depends on the
 * patient's Consents or says which patient the data belongs to:
 *
 * - `insufficient-scope`: the token's scopes do not allow the interaction on the type (decided
 *   from the token alone, before any data is read);
 * - `outside-patient-compartment`: a `patient/` token and data outside its patient's compartment;
 * - `granular-scope`: a granular scope (`?category=…`) the data does not match;
 * - `access-policy`: the consent policy refuses this client the data for this purpose — every
 *   consent reason (`no-consent`, `consent-deny`, `national-opt-out`, `type-1-objection`,
 *   `btg-denied`, `unreadable-consent`, `consent-restricted`, `audit-restricted`, `no-patient`)
 *   reads the same, so a 403 cannot tell whether a Consent names this organisation, denies it, or
 *   records an opt-out;
 * - `not-custodian`: a write that only the patient's custodian (or, for a Consent, the patient)
 *   may make — also for a Consent naming a patient the server does not hold, so a write cannot
 *   probe which patient ids exist;
 * - `audit-source`: posting an AuditEvent without the `audit-source` role.
 */
export type PublicRefusal = 'insufficient-scope' | 'outside-patient-compartment' | 'granular-scope' | 'access-policy' | 'not-custodian' | 'audit-source';

export const PUBLIC_REFUSALS: readonly PublicRefusal[] = ['insufficient-scope', 'outside-patient-compartment', 'granular-scope', 'access-policy', 'not-custodian', 'audit-source'];

/** The category and words a refused client sees for a denial (`write`: the denial of a change, not of a read). */
export function publicRefusal(decision: Decision, write: boolean): { readonly code: PublicRefusal; readonly text: string } {
  switch (decision.reason) {
    case 'insufficient-scope':
      // The scope layer's detail names only the interaction, the permission and the type.
      return { code: 'insufficient-scope', text: decision.detail };
    case 'outside-patient-compartment':
      return { code: 'outside-patient-compartment', text: 'a patient/ scope reaches only the data of the token\'s own patient' };
    case 'granular-scope':
      return { code: 'granular-scope', text: 'the token\'s granular scope does not reach this data' };
    default:
      if (write && decision.reason === 'audit-restricted') return { code: 'audit-source', text: 'posting AuditEvents needs the audit-source role' };
      if (write) return { code: 'not-custodian', text: 'only the custodian of a patient this server holds (or, for a Consent, the patient) may make this change' };
      return { code: 'access-policy', text: 'the access policy does not let this client see it for this purpose' };
  }
}

/**
 * Whether a refused read may carry the spec's break-the-glass hint
 * (http://hl7.org/fhir/R4/operationoutcome-example-break-the-glass.json): the client is
 * registered for BTG or ETREAT, asked for direct care without breaking the glass, and the data is
 * patient data that break-the-glass opens (not Consents or AuditEvents). Never for secondary use
 * (HRESCH, HOPERAT, …), where break-the-glass never applies. It depends on the request alone,
 * never on the patient's Consents, so its presence reveals nothing about them.
 */
export function breakGlassHint(type: ResourceType, purpose: string, registeredPurposes: readonly string[] | undefined): 'BTG' | 'ETREAT' | undefined {
  if (type === 'Consent' || type === 'AuditEvent') return undefined;
  if (!isA(purpose, 'TREAT') || isBreakGlassPurpose(purpose)) return undefined;
  if (registeredPurposes?.includes('BTG')) return 'BTG';
  if (registeredPurposes?.includes('ETREAT')) return 'ETREAT';
  return undefined;
}
