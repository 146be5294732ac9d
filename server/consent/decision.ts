/**
 * The outcome of one access decision: data, not behaviour. Policies return it, the gate acts on
 * it, the audit trail records it, the HTTP layer maps it to a status. Reasons form one closed
 * set, documented in the README's consent policy.
 */
export type Decision =
  | { readonly effect: 'permit'; readonly reason: PermitReason; readonly consents: readonly string[]; readonly provision?: string; readonly detail: string }
  | { readonly effect: 'deny'; readonly reason: DenyReason; readonly consents: readonly string[]; readonly provision?: string; readonly detail: string };

/** Why access was permitted. */
export const PERMIT_REASONS = [
  'scope', // the scope layer found nothing to object to (never the final word on patient data)
  'custodian', // the patient's own organisation, for direct care or its own operations
  'patient-self', // the patient, through a patient-facing app
  'consent-permit', // an active Consent of the patient permits this actor, purpose, data and action
  'default-permit', // no Consent applies and the server runs the opt-out (permit) model
  'break-the-glass', // BTG / ETREAT over the default and over treatment denials
  'national-service', // national services receive every Consent
  'auditor', // auditors read the audit trail
  'named-in-consent', // an organisation a Consent names may read that Consent
  'recorded-by-client', // an audit source reads what it posted itself (events without a patient)
  'open-access', // no policy configured (tests of the layers below)
] as const;
export type PermitReason = (typeof PERMIT_REASONS)[number];

/** Why access was denied. */
export const DENY_REASONS = [
  'insufficient-scope', // the token's scopes do not cover the interaction or type
  'outside-patient-compartment', // a patient/ scope and another patient's data
  'granular-scope', // a granular scope (?category=…) and a resource it does not match
  'no-consent', // not the custodian and no Consent permits it (deny by default)
  'consent-deny', // an active Consent denies it (deny overrides permit)
  'national-opt-out', // secondary use of a patient with a national data opt-out
  'type-1-objection', // secondary use of a patient with a Type 1 objection
  'btg-denied', // break-the-glass refused because a Consent explicitly denies BTG
  'unreadable-consent', // an applicable Consent whose meaning cannot be determined: fail closed
  'consent-restricted', // a Consent resource is only for the custodian, named organisations, national services and the patient
  'audit-restricted', // AuditEvents are only for auditors, the custodian and the patient
  'not-custodian', // a write only the patient's custodian (or the patient) may make
  'no-patient', // the data names no patient this server knows, and nothing else permits it
] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

export function permit(reason: PermitReason, detail: string, consents: readonly string[] = [], provision?: string): Decision {
  return { effect: 'permit', reason, consents, detail, ...(provision ? { provision } : {}) };
}

export function deny(reason: DenyReason, detail: string, consents: readonly string[] = [], provision?: string): Decision {
  return { effect: 'deny', reason, consents, detail, ...(provision ? { provision } : {}) };
}

/** The rule behind each reason, in the words of the README's consent policy ($access-decision quotes it). */
export const RULES: Readonly<Record<PermitReason | DenyReason, string>> = {
  scope: 'The token\'s scopes allow the interaction; the consent rules decide about the data.',
  custodian: 'The patient\'s custodian organisation (managingOrganization, else the organisation that created the Patient) sees its own patients\' data for direct care (TREAT, ETREAT, BTG) and its own operations (HOPERAT).',
  'patient-self': 'The patient sees their own record, Consents and access trail.',
  'consent-permit': 'An active Consent of the patient permits this actor, purpose, time, data and action, and no applicable Consent denies it.',
  'default-permit': 'No Consent applies and this server runs the opt-out (permit by default) model.',
  'break-the-glass': 'Emergency direct care (ETREAT, BTG) by a client registered for it is permitted over the default and over treatment denials, unless a Consent explicitly denies BTG; it is always audited.',
  'national-service': 'Clients with the national-service role receive every Consent.',
  auditor: 'Clients with the auditor role read the audit trail.',
  'named-in-consent': 'An organisation a Consent names may read that Consent.',
  'recorded-by-client': 'An audit source reads AuditEvents it posted that are about no patient.',
  'open-access': 'No access policy is configured.',
  'insufficient-scope': 'The token\'s scopes do not cover the interaction on this type.',
  'outside-patient-compartment': 'A patient/ scope reaches only its own patient\'s data.',
  'granular-scope': 'A granular scope reaches only resources matching its filter.',
  'no-consent': 'Everyone but the custodian is denied by default unless an active Consent of the patient permits them.',
  'consent-deny': 'An active Consent of the patient denies this access; across Consents a deny overrides a permit.',
  'national-opt-out': 'Secondary use (HRESCH, PUBHLTH, HPAYMT, HMARKT, and HOPERAT by anyone but the custodian) of a patient with an active national data opt-out is refused.',
  'type-1-objection': 'Secondary use of a patient with an active Type 1 objection is refused.',
  'btg-denied': 'Break-the-glass is refused when an active Consent explicitly denies purpose BTG to this actor.',
  'unreadable-consent': 'An applicable Consent whose decision cannot be determined is read as a denial (fail closed).',
  'consent-restricted': 'A Consent is visible to its patient\'s custodian, the organisations it names, national services and the patient.',
  'audit-restricted': 'AuditEvents about a patient are visible to auditors, the patient\'s custodian and the patient; posting them needs the audit-source role.',
  'not-custodian': 'Only the patient\'s custodian (or, for Consents, the patient) may change the patient\'s record and Consents.',
  'no-patient': 'The data names no patient known to this server.',
};
