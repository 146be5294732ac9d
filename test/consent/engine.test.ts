import assert from 'node:assert/strict';
import type { Consent, ConsentProvision } from 'fhir/r4';
import type { OrganizationRef, Role } from '../../server/access/context';
import { decide } from '../../server/consent/decide';
import type { DecisionReason } from './reasons';
import type { Actor, DataItem, DecisionRequest } from '../../server/consent/request';
import { loadJson } from '../support/fixtures';

const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
const GP: OrganizationRef = { identifier: { system: ODS, value: 'A81001' } };
const HOSPITAL: OrganizationRef = { identifier: { system: ODS, value: 'R9D' } };
const F001: OrganizationRef = { reference: 'Organization/f001' };
const T2026 = Date.UTC(2026, 5, 1);

const example = (name: string) => loadJson<Consent>('r4', 'examples', 'Consent', `Consent-consent-example-${name}.json`);

function consent(provision: ConsentProvision | undefined, extra: Partial<Consent> = {}): Consent {
  return {
    resourceType: 'Consent',
    id: extra.id ?? 'c1',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: 'Patient/p1' },
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    ...(provision ? { provision } : {}),
    ...extra,
  };
}
const actorOrg = (org: OrganizationRef) => ({ role: { coding: [{ code: 'PRCP' }] }, reference: org.reference ? { reference: org.reference } : { identifier: org.identifier } });
const purposes = (...codes: string[]) => codes.map((code) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code }));
const optOut = (kind: string, extra: Partial<Consent> = {}) =>
  consent({ type: 'deny', purpose: purposes('HRESCH', 'HOPERAT', 'PUBHLTH', 'HPAYMT') }, { id: kind, category: [{ coding: [{ system: 'https://custodian.example.org/fhir/CodeSystem/consent-category', code: kind }] }], ...extra });

interface Case {
  title: string;
  actor?: Partial<Actor> & { roles?: Role[] };
  purpose?: string;
  action?: DecisionRequest['action'];
  data?: Partial<DataItem>;
  consents?: Consent[];
  custodians?: OrganizationRef[];
  now?: number;
  defaultPolicy?: 'deny' | 'permit';
  noPatient?: boolean;
  expect: ['permit' | 'deny', DecisionReason];
  consentsCited?: string[];
}

function run(c: Case) {
  const req: DecisionRequest = {
    actor: { clientId: 'client', roles: [], ...c.actor, organization: c.actor?.organization ?? HOSPITAL },
    purpose: c.purpose ?? 'TREAT',
    action: c.action ?? 'access',
    data: { type: 'Patient', id: 'p1', security: [], ...c.data },
    patients: c.noPatient ? [] : [{ id: 'p1', custodians: c.custodians ?? [GP], consents: c.consents ?? [] }],
    now: c.now ?? T2026,
    defaultPolicy: c.defaultPolicy ?? 'deny',
  };
  return decide(req);
}

const cases: Case[] = [
  // --- the R4 spec's examples (actor f001 = Good Health hospital, not the custodian here) ---
  { title: 'Out: OPTOUT with actor f001 denies f001', actor: { organization: F001 }, consents: [example('Out')], expect: ['deny', 'consent-deny'], consentsCited: ['Consent/consent-example-Out'] },
  { title: 'Out: says nothing to another organisation, so the default (deny) holds', consents: [example('Out')], expect: ['deny', 'no-consent'] },
  { title: 'Out: in a permit-by-default jurisdiction, another organisation is permitted', consents: [example('Out')], defaultPolicy: 'permit', expect: ['permit', 'default-permit'] },
  { title: 'Out: in a permit-by-default jurisdiction, f001 is still denied', actor: { organization: F001 }, consents: [example('Out')], defaultPolicy: 'permit', expect: ['deny', 'consent-deny'] },
  { title: 'notOrg: root type deny for f001 access overrides the OPTIN policyRule', actor: { organization: F001 }, consents: [example('notOrg')], expect: ['deny', 'consent-deny'] },
  { title: 'notOrg: a disclose by f001 is outside its actions (access, correct)', actor: { organization: F001 }, action: 'disclose', consents: [example('notOrg')], defaultPolicy: 'permit', expect: ['permit', 'default-permit'] },
  // notThem, notAuthor: OPTIN and a root provision without type. Their narratives mean "withhold",
  // but nothing in the encoding says deny: read by the rules, the base decision is OPTIN = permit.
  { title: 'notThem (read literally): OPTIN for Practitioner/f204 permits f204', actor: { practitioner: 'Practitioner/f204' }, consents: [example('notThem')], expect: ['permit', 'consent-permit'] },
  { title: 'notThem: another practitioner of the same organisation is outside its actors', actor: { practitioner: 'Practitioner/other' }, consents: [example('notThem')], expect: ['deny', 'no-consent'] },
  { title: 'notAuthor (read literally): OPTIN for f001; "authored by" is not encoded', actor: { organization: F001 }, consents: [example('notAuthor')], expect: ['permit', 'consent-permit'] },
  { title: 'notThis: data limited to Task/example3 says nothing about a Patient', actor: { organization: F001 }, consents: [example('notThis')], expect: ['deny', 'no-consent'] },
  { title: 'notTime: OPTIN within its period (2015-01-01..2015-02-01) permits', now: Date.UTC(2015, 0, 15), consents: [example('notTime')], expect: ['permit', 'consent-permit'] },
  { title: 'notTime: after its period it has expired and counts for nothing', consents: [example('notTime')], expect: ['deny', 'no-consent'] },
  { title: 'basic: OPTIN until 2016 permits in 2010', now: Date.UTC(2010, 0, 1), consents: [example('basic')], expect: ['permit', 'consent-permit'] },
  { title: 'basic: expired in 2026', consents: [example('basic')], expect: ['deny', 'no-consent'] },
  // Emergency: OPTOUT within (f001, ETREAT) and a nested deny for f001: read by the rules it
  // denies ETREAT (its narrative meant to permit it); ETREAT is break-the-glass, which overrides
  // treatment denials, so the answer is permit, citing the overridden Consent.
  { title: 'Emergency: f001 with ETREAT breaks the glass over its deny', actor: { organization: F001 }, purpose: 'ETREAT', consents: [example('Emergency')], expect: ['permit', 'break-the-glass'], consentsCited: ['Consent/consent-example-Emergency'] },
  { title: 'Emergency: f001 with TREAT is outside its context', actor: { organization: F001 }, consents: [example('Emergency')], expect: ['deny', 'no-consent'] },
  // grantor: OPTOUT with actors f001 and Patient/example: read by the rules it denies them (its
  // narrative grants read-only access; an OPTIN policyRule or type permit would say that).
  { title: 'grantor (read literally): OPTOUT denies f001 access', actor: { organization: F001 }, consents: [example('grantor')], defaultPolicy: 'permit', expect: ['deny', 'consent-deny'] },
  { title: 'pkb: OPTOUT for f001 access to normal-confidentiality data denies', actor: { organization: F001 }, data: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }] }, consents: [example('pkb')], expect: ['deny', 'consent-deny'] },
  { title: 'pkb: data without the N label is outside its context', actor: { organization: F001 }, consents: [example('pkb')], defaultPolicy: 'permit', expect: ['permit', 'default-permit'] },
  { title: 'signature: OPTIN for Practitioner/13 within 2015-10..2016-10', actor: { practitioner: 'Practitioner/13' }, now: Date.UTC(2016, 0, 1), consents: [example('signature')], expect: ['permit', 'consent-permit'] },
  { title: 'signature: its nested permit (CDA documents by xcda-author) does not reach a Patient', actor: { practitioner: 'Practitioner/xcda-author' }, now: Date.UTC(2016, 0, 1), consents: [example('signature')], expect: ['deny', 'no-consent'] },
  // smartonfhir: OPTIN for 30 minutes with a nested permit for MedicationRequest: read by the
  // rules the root permits everything in that window (the nested permit only restates it).
  { title: 'smartonfhir (read literally): OPTIN for everyone during its 30 minutes', now: Date.parse('2016-06-23T17:10:00+10:00'), consents: [example('smartonfhir')], expect: ['permit', 'consent-permit'] },
  { title: 'smartonfhir: expired afterwards', consents: [example('smartonfhir')], expect: ['deny', 'no-consent'] },

  // --- custodian, patient, roles ---
  { title: 'the custodian reads for TREAT without any Consent', actor: { organization: GP }, expect: ['permit', 'custodian'] },
  { title: 'the custodian reads for its own operations (HQUALIMP is a kind of HOPERAT)', actor: { organization: GP }, purpose: 'HQUALIMP', consents: [optOut('national-data-opt-out')], expect: ['permit', 'custodian'] },
  { title: 'the custodian matched by reference', actor: { organization: { reference: 'Organization/gp1' } }, custodians: [{ reference: 'Organization/gp1' }], expect: ['permit', 'custodian'] },
  { title: 'the custodian is not exempt from an opt-out for research', actor: { organization: GP }, purpose: 'HRESCH', consents: [optOut('national-data-opt-out')], expect: ['deny', 'national-opt-out'] },
  { title: 'a Consent denying the custodian does not stop direct care by it', actor: { organization: GP }, consents: [consent({ type: 'deny', actor: [actorOrg(GP)] })], expect: ['permit', 'custodian'] },
  { title: 'the patient reads their own record', actor: { patient: 'p1', organization: undefined }, expect: ['permit', 'patient-self'] },
  { title: 'another organisation without a Consent is denied by default', expect: ['deny', 'no-consent'] },

  // --- Consents permitting and denying ---
  { title: 'a Consent permitting the hospital by ODS code', consents: [consent({ type: 'permit', actor: [actorOrg(HOSPITAL)] })], expect: ['permit', 'consent-permit'] },
  { title: 'a Consent permitting another organisation says nothing to the hospital', consents: [consent({ type: 'permit', actor: [actorOrg(F001)] })], expect: ['deny', 'no-consent'] },
  { title: 'a permit limited to TREAT does not reach HPAYMT', purpose: 'HPAYMT', consents: [consent({ type: 'permit', actor: [actorOrg(HOSPITAL)], purpose: purposes('TREAT') })], expect: ['deny', 'no-consent'] },
  { title: 'a permit for HOPERAT covers its specialisation HQUALIMP', purpose: 'HQUALIMP', consents: [consent({ type: 'permit', actor: [actorOrg(HOSPITAL)], purpose: purposes('HOPERAT') })], expect: ['permit', 'consent-permit'] },
  { title: 'a permit that has not started yet', consents: [consent({ type: 'permit', period: { start: '2027-01-01' } })], expect: ['deny', 'no-consent'] },
  { title: 'a permit within its period', consents: [consent({ type: 'permit', period: { start: '2026-01-01', end: '2026-12-31' } })], expect: ['permit', 'consent-permit'] },
  { title: 'a permit for Consent resources (class) does not reach a Patient', consents: [consent({ type: 'permit', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Consent' }] })], expect: ['deny', 'no-consent'] },
  { title: 'a permit for Patient resources (class) does', consents: [consent({ type: 'permit', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Patient' }] })], expect: ['permit', 'consent-permit'] },
  { title: 'a permit for one Patient instance (data) reaches it', consents: [consent({ type: 'permit', data: [{ meaning: 'instance', reference: { reference: 'Patient/p1' } }] })], expect: ['permit', 'consent-permit'] },
  { title: 'a permit for access does not reach disclose', action: 'disclose', consents: [consent({ type: 'permit', action: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access' }] }] })], expect: ['deny', 'no-consent'] },
  { title: 'a deny of restricted (R) data applies to data labelled R', data: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] }, consents: [consent({ type: 'permit' }, { id: 'p' }), consent({ type: 'deny', securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] }, { id: 'd' })], expect: ['deny', 'consent-deny'], consentsCited: ['Consent/d'] },
  { title: 'the same deny says nothing of unlabelled data, so the permit stands', consents: [consent({ type: 'permit' }, { id: 'p' }), consent({ type: 'deny', securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] }, { id: 'd' })], expect: ['permit', 'consent-permit'] },
  { title: 'deny overrides permit across Consents', consents: [consent({ type: 'permit' }, { id: 'a' }), consent({ type: 'deny', actor: [actorOrg(HOSPITAL)] }, { id: 'b' })], expect: ['deny', 'consent-deny'] },
  { title: 'a nested deny is an exception to a permit', purpose: 'HRESCH', consents: [consent({ type: 'permit', actor: [actorOrg(HOSPITAL)], provision: [{ type: 'deny', purpose: purposes('HRESCH') }] })], expect: ['deny', 'consent-deny'] },
  { title: 'outside the nested exception the base permit holds', consents: [consent({ type: 'permit', actor: [actorOrg(HOSPITAL)], provision: [{ type: 'deny', purpose: purposes('HRESCH') }] })], expect: ['permit', 'consent-permit'] },
  {
    title: 'the most specific (deepest) matching provision decides',
    purpose: 'HRESCH',
    consents: [consent({ type: 'deny', provision: [{ type: 'permit', actor: [actorOrg(HOSPITAL)], provision: [{ type: 'deny', purpose: purposes('HRESCH'), provision: [{ type: 'permit', action: [{ coding: [{ code: 'access' }] }] }] }] }] })],
    expect: ['permit', 'consent-permit'],
  },
  { title: 'a nested provision without a type keeps its parent\'s decision', consents: [consent({ type: 'deny', provision: [{ actor: [actorOrg(HOSPITAL)] }] })], defaultPolicy: 'permit', expect: ['deny', 'consent-deny'] },
  { title: 'inactive, rejected and entered-in-error Consents count for nothing', consents: ['inactive', 'rejected', 'entered-in-error', 'draft', 'proposed'].map((status, i) => consent({ type: 'permit' }, { id: `s${i}`, status: status as Consent['status'] })), expect: ['deny', 'no-consent'] },
  { title: 'an applicable Consent with neither type nor a known policyRule is unreadable: deny', consents: [consent({ actor: [actorOrg(HOSPITAL)] }, { policyRule: undefined, policy: [{ uri: 'https://example.org/some-policy' }] })], defaultPolicy: 'permit', expect: ['deny', 'unreadable-consent'] },
  { title: 'a permit conditioned on codes this server cannot evaluate does not permit', consents: [consent({ type: 'permit', code: [{ coding: [{ system: 'http://loinc.org', code: '34133-9' }] }] })], expect: ['deny', 'no-consent'] },
  { title: 'a deny conditioned on codes this server cannot evaluate still denies', consents: [consent({ type: 'permit' }, { id: 'p' }), consent({ type: 'deny', code: [{ coding: [{ system: 'http://loinc.org', code: '34133-9' }] }] }, { id: 'd' })], expect: ['deny', 'consent-deny'] },

  // --- national data opt-out and Type 1 objections ---
  { title: 'research on an opted-out patient is refused', purpose: 'HRESCH', consents: [optOut('national-data-opt-out')], expect: ['deny', 'national-opt-out'] },
  { title: 'a permit Consent for research does not override the opt-out', purpose: 'HRESCH', consents: [consent({ type: 'permit', actor: [actorOrg(HOSPITAL)] }, { id: 'p' }), optOut('national-data-opt-out')], expect: ['deny', 'national-opt-out'] },
  { title: 'public health, payment and others\' operations are secondary use too', purpose: 'PUBHLTH', consents: [optOut('national-data-opt-out')], defaultPolicy: 'permit', expect: ['deny', 'national-opt-out'] },
  { title: 'a specialisation of research (CLINTRCH) cannot slip past the opt-out', purpose: 'CLINTRCH', consents: [optOut('national-data-opt-out')], defaultPolicy: 'permit', expect: ['deny', 'national-opt-out'] },
  { title: 'a Type 1 objection refuses HOPERAT by another organisation', purpose: 'HOPERAT', consents: [optOut('type-1-objection')], defaultPolicy: 'permit', expect: ['deny', 'type-1-objection'] },
  { title: 'an opt-out withdrawn (inactive) no longer refuses', purpose: 'HRESCH', consents: [optOut('national-data-opt-out', { status: 'inactive' })], defaultPolicy: 'permit', expect: ['permit', 'default-permit'] },
  { title: 'an opt-out does not touch direct care by a permitted organisation', consents: [optOut('national-data-opt-out'), consent({ type: 'permit', actor: [actorOrg(HOSPITAL)] }, { id: 'p' })], expect: ['permit', 'consent-permit'] },

  // --- break the glass ---
  { title: 'BTG with no Consent at all: permitted and marked as such', purpose: 'BTG', expect: ['permit', 'break-the-glass'] },
  { title: 'ETREAT over a treatment denial', purpose: 'ETREAT', consents: [consent({ type: 'deny', actor: [actorOrg(HOSPITAL)] })], expect: ['permit', 'break-the-glass'], consentsCited: ['Consent/c1'] },
  { title: 'BTG refused when a Consent denies BTG in so many words', purpose: 'BTG', consents: [consent({ type: 'deny', purpose: purposes('BTG') })], expect: ['deny', 'btg-denied'] },
  { title: 'a BTG denial for another organisation does not refuse this one', purpose: 'BTG', consents: [consent({ type: 'deny', purpose: purposes('BTG'), actor: [actorOrg(F001)] })], expect: ['permit', 'break-the-glass'] },
  { title: 'break-the-glass never reaches secondary use', purpose: 'HRESCH', consents: [], expect: ['deny', 'no-consent'] },

  // --- AuditEvents and Consents as data ---
  { title: 'AuditEvent: auditors read it', actor: { roles: ['auditor'] }, data: { type: 'AuditEvent', id: 'a1' }, expect: ['permit', 'auditor'] },
  { title: 'AuditEvent: the custodian reads its patient\'s', actor: { organization: GP }, data: { type: 'AuditEvent', id: 'a1' }, expect: ['permit', 'custodian'] },
  { title: 'AuditEvent: the patient reads their own', actor: { patient: 'p1' }, data: { type: 'AuditEvent', id: 'a1' }, expect: ['permit', 'patient-self'] },
  { title: 'AuditEvent: a permitting Consent does not open the audit trail to others', data: { type: 'AuditEvent', id: 'a1' }, consents: [consent({ type: 'permit' })], expect: ['deny', 'audit-restricted'] },
  { title: 'AuditEvent about no patient: only its recorder, an audit source (and auditors)', actor: { roles: ['audit-source'] }, data: { type: 'AuditEvent', id: 'a1', createdBy: 'client' }, noPatient: true, expect: ['permit', 'recorded-by-client'] },
  { title: 'AuditEvent about no patient: a client that is no audit source does not read it by its client id alone (the server writes as custodian-server)', data: { type: 'AuditEvent', id: 'a1', createdBy: 'client' }, noPatient: true, expect: ['deny', 'audit-restricted'] },
  { title: 'AuditEvent about no patient of ours that names one by identifier: not its recorder\'s to read (found, it would be about that patient, and refused)', actor: { roles: ['audit-source'] }, data: { type: 'AuditEvent', id: 'a1', createdBy: 'client', namesPatientByIdentifier: true }, noPatient: true, expect: ['deny', 'audit-restricted'] },
  { title: 'AuditEvent naming, beside its patient, one by an identifier this server could not place: not even the custodian\'s (that one is someone else)', actor: { organization: GP }, data: { type: 'AuditEvent', id: 'a1', namesUnplacedPatient: true }, expect: ['deny', 'audit-restricted'] },
  { title: 'AuditEvent naming a patient by an identifier this server could not place: auditors still read it', actor: { roles: ['auditor'] }, data: { type: 'AuditEvent', id: 'a1', namesUnplacedPatient: true }, expect: ['permit', 'auditor'] },
  { title: 'AuditEvent about no patient, recorded by someone else', data: { type: 'AuditEvent', id: 'a1', createdBy: 'other' }, noPatient: true, expect: ['deny', 'audit-restricted'] },
  { title: 'Consent: national services receive every Consent', actor: { roles: ['national-service'], organization: { identifier: { system: ODS, value: 'X26' } } }, data: { type: 'Consent', id: 'c9' }, expect: ['permit', 'national-service'] },
  { title: 'Consent: the organisation it names reads it', data: { type: 'Consent', id: 'c9', named: [{ identifier: HOSPITAL.identifier }] }, expect: ['permit', 'named-in-consent'] },
  { title: 'Consent: the custodian reads it', actor: { organization: GP }, data: { type: 'Consent', id: 'c9' }, expect: ['permit', 'custodian'] },
  { title: 'Consent: anyone else is refused', data: { type: 'Consent', id: 'c9', named: [{ reference: 'Organization/f001' }] }, expect: ['deny', 'consent-restricted'] },
  { title: 'Patient data naming no known patient', noPatient: true, expect: ['deny', 'no-patient'] },
];

describe('Consent engine: decide(request) → Decision (table)', () => {
  for (const c of cases) {
    it(c.title, () => {
      const d = run(c);
      assert.deepEqual([d.effect, d.reason], c.expect, d.detail);
      if (c.consentsCited) assert.deepEqual(d.consents.map((x) => x.replace(/\/_history\/\d+$/, '')), c.consentsCited);
      assert.ok(d.detail.length > 0);
    });
  }

  it('is pure: the same request gives the same decision, and the input is untouched', () => {
    const consents = [example('Emergency'), example('pkb')];
    const before = JSON.stringify(consents);
    const req = { actor: { organization: F001 }, purpose: 'ETREAT', consents, expect: ['permit', 'break-the-glass'] } as Case;
    assert.deepEqual(run(req), run(req));
    assert.equal(JSON.stringify(consents), before);
  });
});
