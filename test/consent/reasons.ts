import type { DenyReason, PermitReason } from '../../server/consent/decision';
export type DecisionReason = PermitReason | DenyReason;
