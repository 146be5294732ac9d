import type { NextFunction, Request, Response } from 'express';
import { FhirError } from '../errors';

/** Control characters: no path segment or parameter value needs one, and PostgreSQL's text cannot hold U+0000. */
const CONTROL = /[\u0000-\u001F\u007F]/;

/**
 * Refuses a request target no route could mean, before anything reads it: path segments that
 * are not valid percent-encoding (`/Patient/%E0%A4%A`) and control characters in a decoded path
 * segment or query parameter (`?name=a%00b`), which would otherwise reach the database and fail
 * there (a 500 on PostgreSQL). A 400 that does not echo the offending value.
 */
export function checkRequestTarget(req: Request, _res: Response, next: NextFunction): void {
  for (const segment of req.path.split('/')) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      throw new FhirError('invalid-request', 'The URL path is not valid percent-encoding');
    }
    if (CONTROL.test(decoded)) throw new FhirError('invalid-request', 'The URL path contains a control character');
  }
  const q = req.originalUrl.indexOf('?');
  if (q >= 0) {
    for (const [name, value] of new URLSearchParams(req.originalUrl.slice(q + 1))) {
      if (CONTROL.test(name)) throw new FhirError('invalid-request', 'A query parameter name contains a control character');
      if (CONTROL.test(value)) throw new FhirError('invalid-request', `The value of query parameter '${name}' contains a control character`);
    }
  }
  next();
}
