import type { CodeableConcept, Coding, Consent, ConsentProvision, Reference } from 'fhir/r4';
import { ODS_SYSTEM, type OrganizationRef } from '../access/context';
import { isA } from '../access/purpose';
import { parseDateRange } from '../fhir/dates';
import type { DecisionRequest } from './request';

/**
 * What one Consent says about one request, read as LEAP CDS and IHE PCF read R4
 * (http://hl7.org/fhir/R4/consent.html#provision):
 *
 * - A Consent applies only within the context its root provision sets (actor, purpose, period,
 *   class, security label, data, action); outside it, it says nothing (`not-applicable`).
 * - Within that context the base decision is the root `provision.type`, else the `policyRule`:
 *   OPTIN/OPTINR permit, OPTOUT/OPTOUTE deny; anything else is `unreadable`.
 * - A provision purpose covers its v3-ActReason specialisations (HOPERAT covers HQUALIMP).
 * - Nested provisions are exceptions to their parent: the most specific (deepest) matching one
 *   decides; a nested provision without a type keeps its parent's decision; among matching
 *   siblings a deny wins.
 * - Criteria this server cannot evaluate (`code`, `dataPeriod`, `authoredby` data, class codes
 *   other than resource types) are read conservatively: a deny provision with them still
 *   applies, a permit provision with them does not.
 *
 * Only `status = active` Consents count. Pure: no clock, no I/O.
 */
export type ConsentResult =
  | { readonly effect: 'permit' | 'deny'; readonly provision: string; readonly consent: string }
  | { readonly effect: 'not-applicable'; readonly why: string; readonly consent: string }
  | { readonly effect: 'unreadable'; readonly why: string; readonly consent: string };

const RESOURCE_TYPES_SYSTEM = 'http://hl7.org/fhir/resource-types';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

/** `Consent/id/_history/v` (or `Consent/id`): how decisions cite a Consent. */
export function consentRef(c: Consent): string {
  return c.meta?.versionId ? `Consent/${c.id}/_history/${c.meta.versionId}` : `Consent/${c.id}`;
}

export function policyRuleDecision(c: Consent): 'permit' | 'deny' | undefined {
  for (const coding of c.policyRule?.coding ?? []) {
    if (coding.code === 'OPTIN' || coding.code === 'OPTINR') return 'permit';
    if (coding.code === 'OPTOUT' || coding.code === 'OPTOUTE') return 'deny';
  }
  return undefined;
}

export function evaluateConsent(consent: Consent, req: DecisionRequest): ConsentResult {
  const ref = consentRef(consent);
  if (consent.status !== 'active') return { effect: 'not-applicable', why: `status is ${consent.status}`, consent: ref };
  const root: ConsentProvision = consent.provision ?? {};
  const base = root.type ?? policyRuleDecision(consent);
  // The root's own criteria are judged as if it were a deny (conservative) when its meaning is unknown.
  const rootMatch = matches(root, req, base ?? 'deny');
  if (!rootMatch.ok) return { effect: 'not-applicable', why: `outside its context: ${rootMatch.why}`, consent: ref };
  if (!base) return { effect: 'unreadable', why: 'neither provision.type nor a known policyRule (OPTIN, OPTINR, OPTOUT, OPTOUTE) says what it decides', consent: ref };
  const { effect, path } = resolve(root, base, req, 'provision');
  return { effect, provision: path, consent: ref };
}

function resolve(p: ConsentProvision, inherited: 'permit' | 'deny', req: DecisionRequest, path: string): { effect: 'permit' | 'deny'; path: string } {
  const hits: { effect: 'permit' | 'deny'; path: string }[] = [];
  (p.provision ?? []).forEach((child, i) => {
    const effect = child.type ?? inherited;
    if (matches(child, req, effect).ok) hits.push(resolve(child, effect, req, `${path}.provision[${i}]`));
  });
  if (hits.length === 0) return { effect: inherited, path };
  return hits.find((h) => h.effect === 'deny') ?? hits[0];
}

type Match = { ok: true } | { ok: false; why: string };
const yes: Match = { ok: true };
const no = (why: string): Match => ({ ok: false, why });

/** Whether a provision's criteria all hold for the request. */
export function matches(p: ConsentProvision, req: DecisionRequest, effect: 'permit' | 'deny'): Match {
  const unknown = (what: string): Match => (effect === 'deny' ? yes : no(`${what} cannot be evaluated here, so a permit does not rely on it`));
  if (p.period) {
    const start = p.period.start ? parseDateRange(p.period.start)?.lo : undefined;
    const end = p.period.end ? parseDateRange(p.period.end)?.hi : undefined;
    if (start !== undefined && req.now < start) return no(`its period starts ${p.period.start}`);
    if (end !== undefined && req.now > end) return no(`its period ended ${p.period.end}`);
  }
  if (p.actor?.length && !p.actor.some((a) => actorMatches(a.reference, req))) return no('the requester is not among its actors');
  // A purpose covers its specialisations: a provision about HOPERAT speaks of HQUALIMP too.
  if (p.purpose?.length && !p.purpose.some((c) => !!c.code && (!c.system || c.system === ACT_REASON) && isA(req.purpose, c.code))) {
    return no(`purpose ${req.purpose} is not among its purposes`);
  }
  if (p.action?.length && !p.action.some((cc) => codes(cc).some((c) => c.code === req.action))) return no(`action ${req.action} is not among its actions`);
  if (p.securityLabel?.length && !p.securityLabel.some((l) => req.data.security.some((s) => s.system === l.system && s.code === l.code))) {
    return no('the data carries none of its security labels');
  }
  if (p.class?.length) {
    const typed = p.class.filter((c) => c.system === RESOURCE_TYPES_SYSTEM);
    if (typed.length && !typed.some((c) => c.code === req.data.type)) return no(`${req.data.type} is not among its classes`);
    if (!typed.length) return unknown('class (not resource types)');
  }
  if (p.data?.length) {
    const target = `${req.data.type}/${req.data.id}`;
    const understood = p.data.filter((d) => d.meaning !== 'authoredby');
    if (understood.some((d) => stripBase(d.reference.reference) === target)) return yes;
    if (understood.length === p.data.length) return no(`${target} is not among its data`);
    return unknown('data authored by someone');
  }
  if (p.code?.length) return unknown('code');
  if (p.dataPeriod) return unknown('dataPeriod');
  return yes;
}

function codes(cc: CodeableConcept): Coding[] {
  return cc.coding ?? [];
}

function stripBase(reference: string | undefined): string | undefined {
  if (!reference) return undefined;
  const m = /([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(\/_history\/[^/]+)?$/.exec(reference);
  return m ? m[1] : reference;
}

/** Does a provision actor (or a Consent's named party) refer to the requester? */
export function actorMatches(ref: Reference | undefined, req: DecisionRequest): boolean {
  if (!ref) return false;
  const { organization, practitioner, patient } = req.actor;
  const reference = stripBase(ref.reference);
  if (reference) {
    if (organization?.reference && reference === organization.reference) return true;
    if (practitioner && reference === practitioner) return true;
    if (patient && reference === `Patient/${patient}`) return true;
  }
  if (ref.identifier?.value && organization?.identifier?.value) {
    return ref.identifier.value === organization.identifier.value && (ref.identifier.system ?? ODS_SYSTEM) === (organization.identifier.system ?? ODS_SYSTEM);
  }
  return false;
}

/** Is an organisation one of the custodians? (Matched by ODS-code identifier or by reference.) */
export function isCustodian(org: OrganizationRef | undefined, custodians: readonly OrganizationRef[]): boolean {
  if (!org) return false;
  return custodians.some(
    (c) =>
      (c.reference !== undefined && c.reference === org.reference) ||
      (c.identifier?.value !== undefined && c.identifier.value === org.identifier?.value && (c.identifier.system ?? ODS_SYSTEM) === (org.identifier?.system ?? ODS_SYSTEM)),
  );
}
