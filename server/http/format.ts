import type { NextFunction, Request, Response } from 'express';
import type { Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { FhirError } from '../errors';
import { selectElements, summarize, type SummaryMode } from '../fhir/subset';
import { locals, type ResponseFormat } from './request';

/**
 * Content negotiation (http://hl7.org/fhir/R4/http.html#mime-type): JSON only, as
 * `application/fhir+json` (default) or `application/json` when that is what the client asked
 * for. `_format` overrides Accept. XML, Turtle and HTML get a 406 with an OperationOutcome.
 */
const JSON_FORMATS: Record<string, ResponseFormat['mime']> = {
  json: 'application/fhir+json',
  'application/fhir+json': 'application/fhir+json',
  'application/json+fhir': 'application/fhir+json',
  'application/json': 'application/json',
};

function fromFormatParam(value: string): ResponseFormat['mime'] {
  const base = value.split(';')[0].trim().toLowerCase();
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

/** Bulk Data output files (served as application/fhir+ndjson; Accept may say so). */
const BULK_FILE = /^\/_export\/[^/]+\/[^/]+$/;

/** Middleware: decides the response format once per request. */
export function negotiate(req: Request, res: Response, next: NextFunction): void {
  const format = typeof req.query._format === 'string' ? req.query._format : undefined;
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
  res.end(pretty ? JSON.stringify(body, null, 2) : JSON.stringify(body));
}

/** Reads `_summary` / `_elements` from the query, validated. */
export function subsetting(req: Request): { summary?: SummaryMode; elements?: string[] } {
  const summary = req.query._summary;
  const elements = req.query._elements;
  const out: { summary?: SummaryMode; elements?: string[] } = {};
  if (summary !== undefined) {
    if (typeof summary !== 'string' || !['true', 'text', 'data', 'count', 'false'].includes(summary)) {
      throw new FhirError('invalid-request', `_summary must be one of true, text, data, count, false`);
    }
    out.summary = summary as SummaryMode;
  }
  if (elements !== undefined) {
    const list = (Array.isArray(elements) ? elements : [elements]).flatMap((e) => String(e).split(','));
    out.elements = list.map((e) => e.trim()).filter(Boolean);
  }
  return out;
}

/** A resource shaped by `_summary` / `_elements` as requested. */
export function shaped(type: ResourceType, resource: Resource, shape: { summary?: SummaryMode; elements?: string[] }): Resource {
  if (shape.summary && shape.summary !== 'false') return summarize(type, resource, shape.summary);
  if (shape.elements?.length) return selectElements(type, resource, shape.elements);
  return resource;
}
