import type { Request, Response } from 'express';
import type { Resource } from 'fhir/r4';
import { informational } from '../errors';
import type { WriteResult } from '../interactions/common';
import type { StoredVersion } from '../store/records';
import { sendJson, shaped, subsetting } from './format';
import { locals, preferOf } from './request';

/** Headers every response about one version carries. */
export function versionHeaders(v: StoredVersion): Record<string, string> {
  return { ETag: `W/"${v.versionId}"`, 'Last-Modified': new Date(v.lastUpdated).toUTCString() };
}

export function locationOf(res: Response, v: StoredVersion): string {
  return `${locals(res).baseUrl}/${v.type}/${v.id}/_history/${v.versionId}`;
}

/**
 * Sends a read result: 304 when If-None-Match / If-Modified-Since say the client's copy is
 * current, otherwise the resource shaped by _summary / _elements.
 */
export function sendVersion(req: Request, res: Response, v: StoredVersion): void {
  const headers = versionHeaders(v);
  const inm = req.get('if-none-match');
  if (inm !== undefined) {
    const tags = inm.split(',').map((t) => t.trim().replace(/^W\//, '').replace(/"/g, ''));
    if (tags.includes('*') || tags.includes(String(v.versionId))) {
      res.status(304);
      for (const [k, value] of Object.entries(headers)) res.setHeader(k, value);
      res.end();
      return;
    }
  } else {
    const ims = req.get('if-modified-since');
    const since = ims ? Date.parse(ims) : NaN;
    // HTTP dates have second precision: compare at that precision.
    if (!Number.isNaN(since) && Math.floor(v.lastUpdated / 1000) * 1000 <= since) {
      res.status(304);
      for (const [k, value] of Object.entries(headers)) res.setHeader(k, value);
      res.end();
      return;
    }
  }
  sendJson(res, 200, shaped(v.type, v.resource!, subsetting(req)), headers);
}

/**
 * Sends the result of a write, honouring `Prefer: return=minimal | representation |
 * OperationOutcome` (http://hl7.org/fhir/R4/http.html#ops).
 */
export function sendWrite(req: Request, res: Response, result: WriteResult): void {
  const prefer = preferOf(req).return ?? 'representation';
  const v = result.version;
  const headers: Record<string, string> = {};
  if (v) Object.assign(headers, versionHeaders(v));
  if (v && result.status !== 204) {
    headers.Location = locationOf(res, v);
    // (Content-Location says the body is the resource: not when it is withheld)
    if (result.status === 201 && !result.withheld) headers['Content-Location'] = headers.Location;
  }
  if (prefer === 'OperationOutcome' || (result.withheld && prefer !== 'minimal') || (result.status === 200 && !v)) {
    sendJson(res, result.status === 204 ? 200 : result.status, informational(result.message), headers);
    return;
  }
  if (result.status === 204 || prefer === 'minimal' || !v?.resource) {
    res.status(result.status === 204 || !v?.resource ? 204 : result.status);
    if (res.statusCode === 204) delete headers['Content-Location'];
    for (const [k, value] of Object.entries(headers)) res.setHeader(k, value);
    res.end();
    return;
  }
  sendJson(res, result.status, v.resource as Resource, headers);
}
