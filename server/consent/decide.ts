import type { Consent } from 'fhir/r4';
import { deny, permit, type Decision } from './decision';
import { parseDateRange } from '../fhir/dates';
import { actorMatches, consentRef, evaluateConsent, isCustodian, type ConsentResult } from './evaluate';
import { objectionKind } from './opt-out';
import { isBreakGlassPurpose, isCustodianPurpose, isSecondaryPurpose } from './purposes';
import type { DecisionRequest, PatientFacts } from './request';

/**
 * The consent engine: `(request) → Decision`, pure and synchronous. The policy it implements is
 * the README's "Consent policy" section; each rule below is one paragraph of it, in order.
 */
export function decide(req: DecisionRequest): Decision {
  switch (req.data.type) {
    case 'AuditEvent':
      return decideAuditEvent(req);
    case 'Consent':
      return decideConsentResource(req);
    default:
      return decidePatientData(req);
  }
}

/** Every patient must allow it (an event about two patients is seen by those who may see both). */
function forEveryPatient(req: DecisionRequest, one: (p: PatientFacts) => Decision, none: () => Decision): Decision {
  if (req.patients.length === 0) return none();
  let last: Decision | undefined;
  for (const p of req.patients) {
    last = one(p);
    if (last.effect === 'deny') return last;
  }
  return last!;
}

/** AuditEvents about a patient: auditors, the patient's custodian, the patient. No one else. */
function decideAuditEvent(req: DecisionRequest): Decision {
  const { actor } = req;
  if (actor.roles.includes('auditor')) return permit('auditor', 'auditors read the audit trail');
  // A patient named by an identifier this server could not place is someone else to everyone
  // but auditors (resources/audit-event.ts namesUnplacedPatient).
  if (req.data.namesUnplacedPatient) return deny('audit-restricted', 'this AuditEvent names a patient by an identifier this server could not place: it is for auditors');
  return forEveryPatient(
    req,
    (p) => {
      if (actor.patient === p.id) return permit('patient-self', `Patient/${p.id} reads who accessed their record`);
      const objected = disclosureObjection(req, p);
      if (objected) return objected;
      if (isCustodian(actor.organization, p.custodians)) return permit('custodian', `the custodian of Patient/${p.id} reads its audit trail`);
      return deny('audit-restricted', `AuditEvents about Patient/${p.id} are for auditors, its custodian and the patient`);
    },
    () =>
      // Not one that names a patient by identifier: found on this server it would be about that
      // patient, and a source that could read it only when not found would learn which it was.
      actor.roles.includes('audit-source') && req.data.createdBy && req.data.createdBy === actor.clientId && !req.data.namesPatientByIdentifier
        ? permit('recorded-by-client', 'an audit source reads an event it recorded itself')
        : deny('audit-restricted', 'AuditEvents about no patient are for auditors'),
  );
}

/** A Consent: its patient's custodian, the organisations it names, national services, the patient. */
function decideConsentResource(req: DecisionRequest): Decision {
  const { actor } = req;
  if (actor.roles.includes('national-service')) return permit('national-service', 'national services receive every Consent');
  // Read only if no rule before it decides (it reads the Consent's content).
  let namesActor: boolean | undefined;
  const named = () => (namesActor ??= (req.data.named ?? []).some((party) => actorMatches(party, req)));
  return forEveryPatient(
    req,
    (p) => {
      if (actor.patient === p.id) return permit('patient-self', `Patient/${p.id} reads their own Consent`);
      const objected = disclosureObjection(req, p);
      if (objected) return objected;
      if (isCustodian(actor.organization, p.custodians)) return permit('custodian', `the custodian of Patient/${p.id}`);
      if (named()) return permit('named-in-consent', 'the Consent names this organisation');
      return deny('consent-restricted', 'a Consent is for its patient\'s custodian, the organisations it names, national services and the patient');
    },
    () => (named() ? permit('named-in-consent', 'the Consent names this organisation') : deny('no-patient', 'the Consent names no patient this server knows')),
  );
}

/** A Patient (and any other patient data): the full rule set. */
function decidePatientData(req: DecisionRequest): Decision {
  return forEveryPatient(req, (p) => decideForPatient(req, p), () => deny('no-patient', 'the data names no patient this server knows'));
}

function decideForPatient(req: DecisionRequest, p: PatientFacts): Decision {
  const { actor, purpose } = req;
  // 1. The patient themself.
  if (actor.patient === p.id) return permit('patient-self', `Patient/${p.id} reads their own record`);
  // 2. The custodian, for direct care and its own operations.
  const custodian = isCustodian(actor.organization, p.custodians);
  if (custodian && isCustodianPurpose(purpose)) return permit('custodian', `the custodian of Patient/${p.id}, for ${purpose}`);
  const active = p.consents.filter((c) => c.status === 'active');
  // 3. Secondary use of a patient who objected: refused, whatever else any Consent says.
  const objected = objection(req, p);
  if (objected) return objected;
  const results = active.map((c) => evaluateConsent(c, req));
  // 4. Break the glass: direct care in an emergency, over the default and over treatment denials,
  //    unless a Consent denies BTG in so many words.
  if (isBreakGlassPurpose(purpose)) {
    const refusal = active.find((c) => deniesBreakGlass(c, req));
    if (refusal) return deny('btg-denied', `Consent ${consentRef(refusal)} explicitly denies break-the-glass access`, [consentRef(refusal)]);
    const overridden = results.filter((r) => r.effect === 'deny').map((r) => r.consent);
    return permit('break-the-glass', `${purpose} access to Patient/${p.id}${overridden.length ? `, overriding ${overridden.join(', ')}` : ''}`, overridden);
  }
  // 5. Deny overrides permit across the patient's active Consents; an applicable Consent that
  //    cannot be read counts as a deny (fail closed).
  return combineDenyOverrides(results, p, req);
}

/** Rule 3: the in-force objection of the patient that refuses this secondary use, if any. */
function objection(req: DecisionRequest, p: PatientFacts): Decision | undefined {
  if (!isSecondaryPurpose(req.purpose)) return undefined;
  for (const c of p.consents) {
    if (c.status !== 'active') continue;
    const kind = objectionKind(c);
    if (kind && inForce(c, req.now)) return deny(kind, `Patient/${p.id} has a ${kind === 'national-opt-out' ? 'national data opt-out' : 'Type 1 objection'}; ${req.purpose} is secondary use`, [consentRef(c)]);
  }
  return undefined;
}

/**
 * Rule 3 for a disclosure (a bulk export) of a patient's Consents and AuditEvents: an export for
 * secondary use leaves out everything of a patient who objected, not only their Patient, unless
 * the custodian discloses for its own operations. National services still receive every Consent.
 */
function disclosureObjection(req: DecisionRequest, p: PatientFacts): Decision | undefined {
  if (req.action !== 'disclose') return undefined;
  if (isCustodian(req.actor.organization, p.custodians) && isCustodianPurpose(req.purpose)) return undefined;
  return objection(req, p);
}

/** Deny-overrides: any deny (or unreadable) wins; else any permit; else the server default. */
export function combineDenyOverrides(results: readonly ConsentResult[], p: PatientFacts, req: DecisionRequest): Decision {
  const denied = results.filter((r) => r.effect === 'deny');
  if (denied.length) {
    const first = denied[0] as { provision: string };
    return deny('consent-deny', `an active Consent of Patient/${p.id} denies ${req.purpose} ${req.action}`, denied.map((r) => r.consent), first.provision);
  }
  const unreadable = results.find((r) => r.effect === 'unreadable');
  if (unreadable) return deny('unreadable-consent', `${unreadable.consent}: ${(unreadable as { why: string }).why}`, [unreadable.consent]);
  const permitted = results.filter((r) => r.effect === 'permit');
  if (permitted.length) {
    const first = permitted[0] as { provision: string };
    return permit('consent-permit', `an active Consent of Patient/${p.id} permits ${req.purpose} ${req.action}`, permitted.map((r) => r.consent), first.provision);
  }
  return req.defaultPolicy === 'permit'
    ? permit('default-permit', `no Consent of Patient/${p.id} applies; this server's default is permit`)
    : deny('no-consent', `no active Consent of Patient/${p.id} permits this organisation ${req.purpose} ${req.action}`);
}

/** A Consent is in force when `now` is within its root provision's period (if it has one). */
export function inForce(c: Consent, now: number): boolean {
  const period = c.provision?.period;
  if (!period) return true;
  const start = period.start ? parseDateRange(period.start)?.lo : undefined;
  const end = period.end ? parseDateRange(period.end)?.hi : undefined;
  return (start === undefined || now >= start) && (end === undefined || now <= end);
}

/** An active Consent with a deny provision, applying to this requester, that names purpose BTG. */
function deniesBreakGlass(c: Consent, req: DecisionRequest): boolean {
  const btg = { ...req, purpose: 'BTG' };
  const r = evaluateConsent(c, btg);
  if (r.effect !== 'deny') return false;
  // "explicitly": the deciding provision or one of its ancestors lists BTG among its purposes.
  const path = r.provision.split('.').slice(1);
  let node = c.provision;
  const chain = [node];
  for (const step of path) {
    const m = /^provision\[(\d+)\]$/.exec(step);
    node = m ? node?.provision?.[Number(m[1])] : undefined;
    chain.push(node);
  }
  return chain.some((n) => n?.purpose?.some((code) => code.code === 'BTG'));
}
