import type { Request, Response } from 'express';
import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import type { HttpDeps } from '../http/deps';
import { accessDecisionOperation } from './access-decision';
import { accessReportOperation } from './access-report';
import { verifyOperation } from './verify';
import { sharingSummaryOperation } from './sharing-summary';
import { validateOperation } from './validate';
import { exportOperation, patientExportOperation } from './export';
import { deliveryStatusOperation } from './delivery-status';

export type OperationLevel = 'system' | 'type' | 'instance';

/** One FHIR operation the server offers: where it can be invoked, and its handler. */
export interface OperationDef {
  /** With the leading `$`. */
  readonly name: string;
  /** Canonical URL of its OperationDefinition (listed in the CapabilityStatement). */
  readonly definition: string;
  readonly levels: readonly OperationLevel[];
  readonly methods: readonly ('GET' | 'POST')[];
  readonly types: readonly ResourceType[];
  handler(req: Request, res: Response, deps: HttpDeps, target: { type?: ResourceType; id?: string }): Promise<void>;
}

/** Every operation, one file each under `server/operations/` (an operation defined at two levels by two definitions has two entries). */
export const OPERATIONS: readonly OperationDef[] = [
  validateOperation,
  accessDecisionOperation,
  sharingSummaryOperation,
  accessReportOperation,
  verifyOperation,
  exportOperation,
  patientExportOperation,
  deliveryStatusOperation,
];

/** Finds an operation for a URL: 404 if unknown, 405 for a level or method it does not take. */
export function operation(name: string, level: OperationLevel, method: string, type?: ResourceType): OperationDef {
  const named = OPERATIONS.filter((o) => o.name === name);
  if (named.length === 0) throw new FhirError('not-found', `Operation ${name} is not supported by this server`);
  const onType = type ? named.filter((o) => o.types.includes(type)) : named;
  if (onType.length === 0) throw new FhirError('not-found', `Operation ${name} is not defined on ${type}`);
  const op = onType.find((o) => o.levels.includes(level));
  if (!op) throw new FhirError('method-not-allowed', `${name} cannot be invoked at ${level} level`);
  if (!(op.methods as string[]).includes(method) && !(method === 'HEAD' && op.methods.includes('GET'))) {
    throw new FhirError('method-not-allowed', `${name} takes ${op.methods.join(' or ')}`, { headers: { Allow: op.methods.join(', ') } });
  }
  return op;
}
