import express, { type NextFunction, type Request, type Response } from 'express';
import { FhirError } from '../errors';
import { parseStrictJson } from '../validation/strict-json';

/** What kind of body a request carried, after parsing. */
export type BodyKind = 'none' | 'json' | 'json-patch' | 'form';

const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir']);

/**
 * Reads and parses request bodies: FHIR JSON, JSON Patch and form posts (`_search`, the token
 * endpoint), up to the configured size. Everything else is a 415 with an OperationOutcome; a
 * body that is not well-formed JSON is a 400 that says where it broke.
 */
export function bodyParser(maxBytes: number) {
  const raw = express.raw({ type: () => true, limit: maxBytes });
  return function parseBody(req: Request, res: Response, next: NextFunction): void {
    if (req.method !== 'POST' && req.method !== 'PUT' && req.method !== 'PATCH') {
      res.locals.bodyKind = 'none';
      return next();
    }
    raw(req, res, (err?: unknown) => {
      if (err) return next(err);
      try {
        const buf = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const [kind, body] = parse(req, buf);
        res.locals.bodyKind = kind;
        req.body = body;
        next();
      } catch (e) {
        next(e);
      }
    });
  };
}

function parse(req: Request, buf: Buffer): [BodyKind, unknown] {
  const header = req.get('content-type');
  if (buf.length === 0) return ['none', undefined];
  if (!header) throw new FhirError('unsupported-media-type', 'A request body needs a Content-Type: application/fhir+json');
  const [type, ...params] = header.split(';').map((s) => s.trim().toLowerCase());
  const charset = params.find((p) => p.startsWith('charset='))?.slice('charset='.length).replace(/"/g, '');
  if (charset && charset !== 'utf-8' && charset !== 'utf8') throw new FhirError('unsupported-media-type', `charset ${charset} is not supported; send UTF-8`);
  const text = buf.toString('utf8');
  if (type === 'application/x-www-form-urlencoded') {
    const form = new URLSearchParams(text);
    for (const [k, v] of form) {
      if (CONTROL.test(k) || CONTROL.test(v)) throw new FhirError('invalid-request', `Form parameter ${JSON.stringify(k.replace(CONTROL_ALL, ''))} contains a control character`);
    }
    return ['form', form];
  }
  const patch = type === 'application/json-patch+json';
  if (!patch && !JSON_TYPES.has(type)) {
    throw new FhirError('unsupported-media-type', `Content-Type ${type} is not accepted; send application/fhir+json${req.method === 'PATCH' ? ' or application/json-patch+json' : ''}`);
  }
  return [patch ? 'json-patch' : 'json', parseStrictJson(text.replace(/^\uFEFF/, ''))];
}

/** No parameter value needs a control character, and PostgreSQL's text cannot hold U+0000. */
const CONTROL = /[\u0000-\u001F\u007F]/;
const CONTROL_ALL = /[\u0000-\u001F\u007F]/g;
