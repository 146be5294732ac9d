import type { Coding, Consent, ConsentProvision, Reference } from 'fhir/r4';
import type { OrganizationRef } from '../access/context';
import { consentRef, policyRuleDecision } from './evaluate';
import { objectionKind } from './opt-out';
import { inForce } from './decide';

/** One line of "who can see my record": an actor, what for, until when, and on which Consent. */
export interface SharingLine {
  readonly effect: 'permit' | 'deny';
  /** The actors the provision names; empty means anyone in its context. */
  readonly actors: readonly Reference[];
  /** Purposes it is limited to; empty means any purpose. */
  readonly purposes: readonly Coding[];
  readonly actions: readonly string[];
  /** Other limits (resource types, security labels, data), in words. */
  readonly limits: readonly string[];
  readonly from?: string;
  readonly until?: string;
  readonly consent: string;
  readonly provision: string;
}

export interface SharingSummary {
  readonly custodians: readonly OrganizationRef[];
  readonly defaultPolicy: 'deny' | 'permit';
  readonly lines: readonly SharingLine[];
  readonly objections: readonly { kind: 'national-opt-out' | 'type-1-objection'; consent: string }[];
  /** Consents (and provisions) that refuse break-the-glass. */
  readonly breakGlassRefusals: readonly string[];
  /** Active Consents whose decision cannot be determined (they deny where they apply). */
  readonly unreadable: readonly string[];
}

/**
 * The "who can see my record" view of a patient's active, in-force Consents: every provision
 * that permits or denies someone, flattened with its effective type, purposes and period. Pure.
 */
export function summarize(custodians: readonly OrganizationRef[], consents: readonly Consent[], now: number, defaultPolicy: 'deny' | 'permit'): SharingSummary {
  const lines: SharingLine[] = [];
  const objections: SharingSummary['objections'][number][] = [];
  const breakGlassRefusals: string[] = [];
  const unreadable: string[] = [];
  for (const c of consents) {
    if (c.status !== 'active' || !inForce(c, now)) continue;
    const ref = consentRef(c);
    const kind = objectionKind(c);
    if (kind) objections.push({ kind, consent: ref });
    const root = c.provision ?? {};
    const base = root.type ?? policyRuleDecision(c);
    if (!base) {
      unreadable.push(ref);
      continue;
    }
    const walk = (p: ConsentProvision, effect: 'permit' | 'deny', path: string, inherited: SharingLine | undefined) => {
      const line: SharingLine = {
        effect,
        actors: p.actor?.length ? p.actor.map((a) => a.reference) : inherited?.actors ?? [],
        purposes: p.purpose?.length ? p.purpose : inherited?.purposes ?? [],
        actions: p.action?.length ? p.action.flatMap((a) => (a.coding ?? []).map((x) => x.code ?? '')).filter(Boolean) : inherited?.actions ?? [],
        limits: [
          ...(inherited?.limits ?? []),
          ...(p.class ?? []).map((x) => `class ${x.code}`),
          ...(p.securityLabel ?? []).map((x) => `data labelled ${x.code}`),
          ...(p.data ?? []).map((d) => `${d.meaning} ${d.reference.reference ?? ''}`.trim()),
          ...(p.code?.length ? ['specific codes'] : []),
        ],
        from: p.period?.start ?? inherited?.from,
        until: p.period?.end ?? inherited?.until,
        consent: ref,
        provision: path,
      };
      lines.push(line);
      if (effect === 'deny' && line.purposes.some((x) => x.code === 'BTG')) breakGlassRefusals.push(`${ref} ${path}`);
      (p.provision ?? []).forEach((child, i) => walk(child, child.type ?? effect, `${path}.provision[${i}]`, line));
    };
    walk(root, base, 'provision', undefined);
  }
  return { custodians, defaultPolicy, lines, objections, breakGlassRefusals, unreadable };
}
