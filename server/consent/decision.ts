/**
 * The outcome of one access decision: data, not behaviour. The consent engine returns it, the
 * gate acts on it, the audit trail records it, the HTTP layer maps it to a status.
 */
export type Decision =
  | { readonly effect: 'permit'; readonly reason: PermitReason; readonly consents: readonly string[]; readonly detail: string }
  | { readonly effect: 'deny'; readonly reason: DenyReason; readonly consents: readonly string[]; readonly detail: string };

/** Why access was permitted. */
export type PermitReason = 'open-access';

/** Why access was denied. */
export type DenyReason = 'no-patient-link';

export function permit(reason: PermitReason, detail: string, consents: readonly string[] = []): Decision {
  return { effect: 'permit', reason, consents, detail };
}
