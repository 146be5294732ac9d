import { isA } from '../access/purpose';

/**
 * The purpose-of-use groups the policy speaks of, each with its v3-ActReason descendants
 * (a client cannot slip past an opt-out by asking for HQUALIMP instead of HOPERAT).
 */

/** The custodian's own: direct care and its own operations. */
export function isCustodianPurpose(purpose: string): boolean {
  return isA(purpose, 'TREAT') || isA(purpose, 'HOPERAT');
}

/** Emergency access over the default and over treatment denials: ETREAT, BTG (a kind of ETREAT), ERTREAT. */
export function isBreakGlassPurpose(purpose: string): boolean {
  return isA(purpose, 'ETREAT');
}

/** Secondary use, refused for patients with a national data opt-out or Type 1 objection. */
export function isSecondaryPurpose(purpose: string): boolean {
  return ['HRESCH', 'HOPERAT', 'PUBHLTH', 'HPAYMT', 'HMARKT'].some((p) => isA(purpose, p));
}
