import type { Request, Response } from 'express';
import type { Parameters } from 'fhir/r4';
import { FhirError } from '../errors';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf } from '../http/request';
import type { OperationDef } from './registry';

export const VERIFY_URL = 'https://custodian.example.org/fhir/OperationDefinition/AuditEvent-verify';

/**
 * `GET /AuditEvent/$verify` (auditors): recomputes the hash chain over every stored AuditEvent
 * and reports whether it is intact, how many links it has, and the first broken or missing link.
 */
export const verifyOperation: OperationDef = {
  name: '$verify',
  definition: VERIFY_URL,
  levels: ['type'],
  methods: ['GET'],
  types: ['AuditEvent'],
  async handler(_req: Request, res: Response, deps: HttpDeps, target) {
    if (target.type !== 'AuditEvent') throw new FhirError('not-found', '$verify is defined on AuditEvent');
    const report = await deps.gate.verifyAuditChain(ctxOf(res));
    const out: Parameters = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'intact', valueBoolean: report.ok },
        { name: 'links', valueInteger: report.links },
        ...(report.firstProblem
          ? [
              { name: 'problem', valueCode: report.firstProblem.problem },
              ...(report.firstProblem.seq !== undefined ? [{ name: 'link', valueInteger: report.firstProblem.seq }] : []),
              ...(report.firstProblem.event ? [{ name: 'event', valueReference: { reference: report.firstProblem.event } }] : []),
              { name: 'detail', valueString: report.firstProblem.detail },
            ]
          : []),
      ],
    };
    sendJson(res, 200, out);
  },
};
