import type { NextFunction, Request, Response } from 'express';
import type { Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import { bodyJson } from '../fhir/stored-json';
import { applySubset, subsetOf, type Subset } from '../fhir/subset';
import { locals, type ResponseFormat } from './request';

/**
 * Content negotiation (http://hl7.org/fhir/R4/http.html#mime-type): JSON only, as
 * `application/fhir+json` (default) or `application/json` when that is what the client asked
 * for. `_format` overrides Accept: `json` and `application/json` answer `application/json`;
 * `fhir+json`, `application/fhir+json` (and the DSTU2 `application/json+fhir`) answer
 * `application/fhir+json`. XML, Turtle and HTML get a 406 with an OperationOutcome.
 */
const JSON_FORMATS: Record<string, ResponseFormat['mime']> = {
  json: 'application/json',
  'application/json': 'application/json',
  'fhir+json': 'application/fhir+json',
  'application/fhir+json': 'application/fhir+json',
  'application/json+fhir': 'application/fhir+json',
};

function fromFormatParam(value: string): ResponseFormat['mime'] {
  // An unescaped '+' in a query string arrives as a space: `_format=fhir+json`.
  const base = value.split(';')[0].trim().toLowerCase().replace(/ /g, '+');
  const mime = JSON_FORMATS[base];
  if (!mime) throw new FhirError('not-acceptable', `_format=${value} is not supported; this server produces application/fhir+json and application/json`);
  return mime;
}

function fromAccept(header: string | undefined): ResponseFormat['mime'] {
  if (!header || !header.trim()) return 'application/fhir+json';
  const ranges = header
    .split(',')
    .map((part) => {
      const [type, ...params] = part.split(';').map((s) => s.trim().toLowerCase());
      const q = params.find((p) => p.startsWith('q='));
      const version = params.find((p) => p.startsWith('fhirversion='));
      return { type, q: q ? Number(q.slice(2)) : 1, version: version?.slice('fhirversion='.length) };
    })
    .filter((r) => r.type && r.q > 0)
    .sort((a, b) => b.q - a.q);
  for (const r of ranges) {
    if (r.version && !/^4\.0(\.\d+)?$/.test(r.version)) continue;
    if (r.type === 'application/fhir+json' || r.type === 'application/json+fhir') return 'application/fhir+json';
    if (r.type === 'application/json') return 'application/json';
    if (r.type === '*/*' || r.type === 'application/*') return 'application/fhir+json';
  }
  throw new FhirError('not-acceptable', `Accept: ${header} cannot be satisfied; this server produces application/fhir+json (FHIR 4.0) and application/json`);
}

/** `_format` given more than once: fine if all agree, otherwise the client must choose. */
function onlyFormat(values: string[]): string {
  const mimes = new Set(values.map(fromFormatParam));
  if (mimes.size > 1) throw new FhirError('invalid-request', '_format is given more than once with different formats');
  return values[0];
}

/** Bulk Data output files (served as application/fhir+ndjson; Accept may say so). */
const BULK_FILE = /^\/_export\/[^/]+\/[^/]+$/;

/** Middleware: decides the response format once per request. */
export function negotiate(req: Request, res: Response, next: NextFunction): void {
  const given = req.query._format;
  const format = Array.isArray(given) ? onlyFormat(given.map(String)) : typeof given === 'string' ? given : undefined;
  const pretty = req.query._pretty === 'true';
  // The error mapper needs a format even when negotiation fails.
  locals(res).format = { mime: 'application/fhir+json', pretty };
  if (BULK_FILE.test(req.path) && /ndjson/.test(req.get('accept') ?? '')) return next();
  locals(res).format = { mime: format ? fromFormatParam(format) : fromAccept(req.get('accept')), pretty };
  next();
}

/** Sends a JSON body in the negotiated format. */
export function sendJson(res: Response, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const { mime, pretty } = locals(res).format ?? { mime: 'application/fhir+json', pretty: false };
  res.status(status);
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('Content-Type', `${mime}; charset=utf-8`);
  res.end(bodyJson(body, pretty));
}

/** Reads `_summary` / `_elements` from the query, validated. */
export function subsetting(req: Request): Subset {
  const pairs: [string, string][] = [];
  for (const name of ['_summary', '_elements']) {
    const v = req.query[name];
    for (const one of v === undefined ? [] : Array.isArray(v) ? v : [v]) pairs.push([name, String(one)]);
  }
  return subsetOf(pairs);
}

/** A resource shaped by `_summary` / `_elements` as requested. */
export function shaped(type: ResourceType, resource: Resource, shape: Subset): Resource {
  return applySubset(type, resource, shape);
}
