import { randomUUID } from 'node:crypto';
import type { Request, Response } from 'express';
import { backgroundRefusal } from '../access/background';
import { FhirError, informational } from '../errors';
import { parametersToPairs, parseExportParameters } from '../feed/export-request';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf, locals, preferOf, queryPairs } from '../http/request';
import type { ExportLevel } from '../store/exports';
import type { OperationDef } from './registry';

export const EXPORT_URL = 'https://custodian.example.org/fhir/OperationDefinition/export';
export const PATIENT_EXPORT_URL = 'https://custodian.example.org/fhir/OperationDefinition/Patient-export';

/**
 * The Bulk Data kick-off (https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-kick-off-request),
 * `[base]/$export` and `[base]/Patient/$export`: checks the parameters and the client's scopes,
 * records the job with its snapshot (the manifest's transactionTime) and answers 202 with the
 * status URL in Content-Location. The work is done in the background (feed/export-runner.ts).
 */
async function kickOff(req: Request, res: Response, deps: HttpDeps, level: ExportLevel): Promise<void> {
  const prefer = preferOf(req);
  if (!prefer.respondAsync) throw new FhirError('invalid-request', 'A Bulk Data export runs asynchronously: send the header Prefer: respond-async');
  const pairs = req.method === 'POST' ? [...queryPairs(req), ...parametersToPairs(res.locals.bodyKind === 'json' ? req.body : undefined)] : queryPairs(req);
  const params = parseExportParameters(pairs, prefer.handling === 'lenient');
  const ctx = ctxOf(res);
  const refusal = backgroundRefusal(ctx, deps.registry, 'Bulk Data exports');
  if (refusal) throw new FhirError('forbidden', refusal);
  const types = params.types ?? deps.feed.exports.searchableTypes(ctx);
  if (types.length === 0) throw new FhirError('forbidden', 'No granted scope lets this client search any resource type, so there is nothing it may export');
  const { baseUrl } = locals(res);
  const request = req.method === 'POST' ? `${baseUrl}${req.path}` : `${baseUrl}${req.originalUrl}`;
  const id = randomUUID();
  await deps.feed.exports.start(ctx, id, { level, types, since: params.since, request, baseUrl, issues: params.issues });
  deps.feed.nudgeExports();
  const location = `${baseUrl}/_export/${id}`;
  sendJson(res, 202, informational(`Export ${id} accepted; poll ${location} for its status`), { 'Content-Location': location });
}

/** `GET|POST [base]/$export`: every resource the client may see, of the types asked for. */
export const exportOperation: OperationDef = {
  name: '$export',
  definition: EXPORT_URL,
  levels: ['system'],
  methods: ['GET', 'POST'],
  types: [],
  handler: (req, res, deps) => kickOff(req, res, deps, 'system'),
};

/** `GET|POST [base]/Patient/$export`: the data in the patients' compartments. */
export const patientExportOperation: OperationDef = {
  name: '$export',
  definition: PATIENT_EXPORT_URL,
  levels: ['type'],
  methods: ['GET', 'POST'],
  types: ['Patient'],
  handler: (req, res, deps, target) => {
    if (target.type !== 'Patient') throw new FhirError('not-found', '$export is defined on the system and on Patient');
    return kickOff(req, res, deps, 'patient');
  },
};
