import type { Request, Response } from 'express';
import type { Parameters, ParametersParameter } from 'fhir/r4';
import { FhirError } from '../errors';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf, queryPairs } from '../http/request';
import type { OperationDef } from './registry';

export const VERIFY_URL = 'https://custodian.example.org/fhir/OperationDefinition/AuditEvent-verify';

/** `anchor=SEQ:HASH`: a chain head kept outside the database (from the server log or an earlier $verify). */
function anchorOf(value: string): { seq: number; hash: string } {
  const m = /^([1-9]\d{0,15}):([0-9a-f]{64})$/.exec(value);
  if (!m) throw new FhirError('invalid-request', `anchor must be LINK:HASH (a link number and its 64 hex digit hash, as $verify and the log give the head), not '${value.slice(0, 100)}'`, { expression: ['anchor'] });
  return { seq: Number(m[1]), hash: m[2] };
}

/**
 * `GET /AuditEvent/$verify[?anchor=LINK:HASH]` (auditors): recomputes the hash chain over every
 * stored AuditEvent — with its history rows and its search-index rows — and reports whether it
 * is intact, how many links it has, its head (keep it outside the database: a later
 * `anchor=` proves the chain was not rewritten up to it), and the first broken or missing link.
 */
export const verifyOperation: OperationDef = {
  name: '$verify',
  definition: VERIFY_URL,
  levels: ['type'],
  methods: ['GET'],
  types: ['AuditEvent'],
  async handler(req: Request, res: Response, deps: HttpDeps, target) {
    if (target.type !== 'AuditEvent') throw new FhirError('not-found', '$verify is defined on AuditEvent');
    const anchors = queryPairs(req)
      .filter(([k]) => k === 'anchor')
      .map(([, v]) => anchorOf(v));
    const report = await deps.gate.verifyAuditChain(ctxOf(res), anchors);
    const head: ParametersParameter[] = report.head
      ? [{ name: 'head', part: [{ name: 'link', valueInteger: report.head.seq }, { name: 'hash', valueString: report.head.hash }, { name: 'links', valueInteger: report.head.links }] }]
      : [];
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
        ...head,
        ...anchors.map((a) => ({ name: 'anchor', valueString: `${a.seq}:${a.hash}` })),
      ],
    };
    sendJson(res, 200, out);
  },
};
