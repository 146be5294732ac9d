import type { Request, Response } from 'express';
import type { AuditEvent, Parameters, ParametersParameter } from 'fhir/r4';
import { CLIENT_ID_SYSTEM } from '../audit/balp';
import { requestLine, shownOutcome } from '../audit/redact';
import { FhirError } from '../errors';
import { isInstant, parseDateRange } from '../fhir/dates';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf, locals } from '../http/request';
import type { OperationDef } from './registry';

export const ACCESS_REPORT_URL = 'https://custodian.example.org/fhir/OperationDefinition/Patient-access-report';

const OUTCOME: Record<string, string> = { '0': 'permitted', '4': 'failed', '8': 'refused', '12': 'failed' };

/**
 * One line of the report, from one AuditEvent about the patient. Its query and outcome text are
 * the whole request's, so only auditors get them whole; others get them as every read of the
 * event gives them (audit/redact.ts).
 */
function line(e: AuditEvent, id: string, patientId: string, auditor: boolean): ParametersParameter {
  const authz = e.subtype?.some((s) => s.code === 'AuthZ-Consent');
  const client = e.agent.find((a) => a.who?.identifier?.system === CLIENT_ID_SYSTEM) ?? e.agent.find((a) => a.requestor);
  const org = e.agent.find((a) => a.type?.coding?.some((c) => c.code === 'PROV'));
  const user = e.agent.find((a) => a.type?.coding?.some((c) => c.code === 'IRCP') && a.who?.reference);
  const purpose = e.agent.flatMap((a) => a.purposeOfUse ?? []).flatMap((p) => p.coding ?? [])[0];
  const data = (e.entity ?? []).filter((x) => x.role?.code === '4' && x.what?.reference).map((x) => x.what!);
  const consents = (e.entity ?? []).filter((x) => x.type?.code === 'Consent' && x.what?.reference).map((x) => x.what!);
  const query = (e.entity ?? []).find((x) => x.role?.code === '24')?.description;
  const btg = purpose?.code === 'BTG' || purpose?.code === 'ETREAT' || (e.purposeOfEvent?.length ?? 0) > 0;
  return {
    name: authz ? 'decision' : 'access',
    part: [
      { name: 'when', valueInstant: e.recorded },
      // A valueString may not be empty: an event posted without a subtype says its type.
      { name: 'what', valueString: authz ? 'consent decision' : (e.subtype ?? []).map((s) => s.code).filter(Boolean).join(', ') || e.type?.code || e.type?.display || 'access' },
      { name: 'outcome', valueCode: OUTCOME[e.outcome ?? '0'] ?? 'failed' },
      ...(e.outcomeDesc ? [{ name: 'reason', valueString: auditor ? e.outcomeDesc : shownOutcome(e, [patientId])! }] : []),
      ...(client?.who ? [{ name: 'client', valueReference: client.who }] : []),
      ...(org?.who ? [{ name: 'organization', valueReference: org.who }] : []),
      ...(user?.who ? [{ name: 'user', valueReference: user.who }] : []),
      ...(purpose ? [{ name: 'purpose', valueCoding: purpose }] : []),
      { name: 'breakTheGlass', valueBoolean: btg },
      ...data.map((d) => ({ name: 'data', valueReference: d })),
      ...consents.map((c) => ({ name: 'consent', valueReference: c })),
      ...(query ? [{ name: 'query', valueString: auditor ? query : requestLine(query) }] : []),
      { name: 'event', valueReference: { reference: `AuditEvent/${id}` } },
    ],
  };
}

/**
 * `GET /Patient/{id}/$access-report[?_since=instant][&_count=n][&_cursor=…]`: who accessed this
 * record, when, from which organisation, for which purpose, what they saw, and whether it was
 * refused or break-the-glass; newest first, `_count` lines a page (default 100), the next page's
 * URL in `next` when there is one. For the patient (patient/ scope), its custodian and auditors.
 * Reading it is itself audited.
 */
export const accessReportOperation: OperationDef = {
  name: '$access-report',
  definition: ACCESS_REPORT_URL,
  levels: ['instance'],
  methods: ['GET'],
  types: ['Patient'],
  async handler(req: Request, res: Response, deps: HttpDeps, target) {
    if (target.type !== 'Patient') throw new FhirError('not-found', '$access-report is defined on Patient');
    const q = req.query as Record<string, string | undefined>;
    if (q._since !== undefined && !isInstant(q._since)) throw new FhirError('invalid-request', '_since must be an instant such as 2026-01-31T12:00:00Z', { expression: ['_since'] });
    if (q._count !== undefined && !/^\d+$/.test(q._count)) throw new FhirError('invalid-request', '_count must be a whole number', { expression: ['_count'] });
    if (q._cursor !== undefined && typeof q._cursor !== 'string') throw new FhirError('invalid-request', '_cursor must be given once', { expression: ['_cursor'] });
    const since = q._since ? parseDateRange(q._since)!.lo : undefined;
    const limit = Math.min(Number(q._count ?? 100), deps.config.search.maxCount);
    const { events, next, auditor } = await deps.gate.accessReport(ctxOf(res), target.id!, since, limit, q._cursor);
    const query = new URLSearchParams({ ...(q._since ? { _since: q._since } : {}), _count: String(limit), ...(next ? { _cursor: next } : {}) });
    const out: Parameters = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'patient', valueReference: { reference: `Patient/${target.id}` } },
        { name: 'count', valueInteger: events.length },
        ...(next ? [{ name: 'next', valueUri: `${locals(res).baseUrl}/Patient/${target.id}/$access-report?${query}` }] : []),
        ...events.map((v) => line(v.resource as AuditEvent, v.id, target.id!, auditor)),
      ],
    };
    sendJson(res, 200, out);
  },
};
