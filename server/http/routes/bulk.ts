import { Router, type Response } from 'express';
import { auditAs } from '../../audit/hold';
import { FhirError } from '../../errors';
import type { ExportFile, ExportJob } from '../../store/exports';
import type { HttpDeps } from '../deps';
import { sendJson } from '../format';
import { ctxOf, locals } from '../request';

const FILE = /^([1-9]\d{0,8})\.ndjson$/;

/** Where a file of an export is served. */
function fileUrl(base: string, job: ExportJob, part: number): string {
  return `${base}/_export/${job.id}/${part}.ndjson`;
}

/** The IG's complete-status body (https://hl7.org/fhir/uv/bulkdata/export.html#response---complete-status). */
export function manifest(base: string, job: ExportJob, files: readonly ExportFile[], feedCursor: string): Record<string, unknown> {
  const item = (f: ExportFile) => ({ type: f.type, url: fileUrl(base, job, f.part), count: f.count });
  return {
    transactionTime: new Date(job.snapshot.time).toISOString(),
    request: job.request,
    requiresAccessToken: true,
    output: files.filter((f) => f.kind === 'output').map(item),
    ...(job.since !== undefined ? { deleted: files.filter((f) => f.kind === 'deleted').map(item) } : {}),
    error: files.filter((f) => f.kind === 'error').map(item),
    extension: {
      // Where the history feed (`_history?_sort=_lastUpdated&_cursor=…`) takes over from this snapshot, gap-free (sealed, like every feed cursor).
      'https://custodian.example.org/fhir/StructureDefinition/feed-cursor': feedCursor,
    },
  };
}

/**
 * The Bulk Data status and file endpoints (the IG's polling location and output files):
 * `GET /_export/{id}` answers 202 with X-Progress while the job runs, 200 with the manifest when
 * it is complete, 500 with an OperationOutcome when it failed; `DELETE /_export/{id}` cancels it;
 * `GET /_export/{id}/{n}.ndjson` serves a file. All of them need the bearer token of the client
 * that started the export (anyone else gets 404).
 */
export function bulkRoutes(deps: HttpDeps): Router {
  const router = Router();
  const retryAfter = String(Math.max(1, Math.ceil(deps.config.feed.pollMs / 1000)));

  router.get('/_export/:id', async (req, res) => {
    auditAs(req, res, 'operation', { operation: '$export-status' });
    const { job, files } = await deps.feed.exports.files(ctxOf(res), req.params.id);
    if (job.status === 'completed') {
      sendManifest(res, manifest(locals(res).baseUrl, job, files, deps.gate.feedCursor.seal(job.snapshot.seq)), job.expiresAt);
    } else if (job.status === 'failed') {
      // The IG's error status: the export failed (this request did not).
      sendJson(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing', diagnostics: `Export ${job.id} failed: ${job.error ?? 'unknown reason'}` }] });
    } else {
      res.status(202);
      // Files written so far, nothing more: the versions examined (and the estimate of them)
      // include those the client may not see, so any measure of them, a share included, would
      // tell beside the file counts how many were withheld (opt-outs, say).
      res.setHeader('X-Progress', `${job.status}: ${job.cursor.part - 1} files written`); // parts are numbered from 1
      res.setHeader('Retry-After', retryAfter);
      res.end();
    }
  });

  router.delete('/_export/:id', async (req, res) => {
    auditAs(req, res, 'operation', { operation: '$export-cancel' });
    await deps.feed.exports.cancel(ctxOf(res), req.params.id);
    res.status(202).end();
  });

  router.get('/_export/:id/:file', async (req, res) => {
    auditAs(req, res, 'read');
    const m = FILE.exec(req.params.file);
    if (!m) throw new FhirError('not-found', `No file ${req.params.file} in export ${req.params.id}`);
    const { content } = await deps.feed.exports.file(ctxOf(res), req.params.id, Number(m[1]));
    res.status(200);
    res.setHeader('Content-Type', 'application/fhir+ndjson');
    res.end(content);
  });

  router.all('/_export/:id', (req) => {
    throw new FhirError('method-not-allowed', `${req.method} is not supported on an export status URL`, { headers: { Allow: 'GET, DELETE' } });
  });
  return router;
}

function sendManifest(res: Response, body: Record<string, unknown>, expiresAt: number | undefined): void {
  res.status(200);
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  if (expiresAt !== undefined) res.setHeader('Expires', new Date(expiresAt).toUTCString());
  res.end(JSON.stringify(body));
}
