/**
 * The outcome of one access decision: data, not behaviour. Policies return it, the gate acts on
 * it, the audit trail records it, the HTTP layer maps it to a status. Reasons form one closed set.
 */
export type Decision =
  | { readonly effect: 'permit'; readonly reason: PermitReason; readonly consents: readonly string[]; readonly detail: string }
  | { readonly effect: 'deny'; readonly reason: DenyReason; readonly consents: readonly string[]; readonly detail: string };

/** Why access was permitted. */
export const PERMIT_REASONS = ['open-access', 'scope'] as const;
export type PermitReason = (typeof PERMIT_REASONS)[number];

/** Why access was denied. */
export const DENY_REASONS = ['insufficient-scope', 'outside-patient-compartment', 'granular-scope'] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

export function permit(reason: PermitReason, detail: string, consents: readonly string[] = []): Decision {
  return { effect: 'permit', reason, consents, detail };
}

export function deny(reason: DenyReason, detail: string, consents: readonly string[] = []): Decision {
  return { effect: 'deny', reason, consents, detail };
}
