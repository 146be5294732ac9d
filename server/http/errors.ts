import type { NextFunction, Request, Response } from 'express';
import { ERRORS, FhirError, outcomeOf } from '../errors';
import type { Logger } from '../log';
import { sendJson } from './format';
import { locals } from './request';

/**
 * The one place where failures become responses. A FhirError renders from the catalogue;
 * body-parser failures map to their catalogue codes; anything else is a 500 whose details go to
 * the log under the request id and never to the client.
 */
export function errorHandler(logger: Logger) {
  return function handleError(err: unknown, _req: Request, res: Response, next: NextFunction): void {
    if (res.headersSent) return next(err);
    const fhirError = toFhirError(err, locals(res).requestId);
    const audit = res.locals.audit as { message?: string } | undefined;
    if (audit) audit.message = `${fhirError.code}: ${fhirError.message}`;
    if (fhirError.code === 'internal' || fhirError.code === 'unavailable') {
      logger.error('request failed', { requestId: locals(res).requestId, error: describe(err) });
    }
    sendJson(res, fhirError.status, outcomeOf(fhirError), { ...(fhirError.options.headers ?? {}) });
  };
}

/**
 * An unexpected failure inside one part of a request (a batch entry, which fails alone): logged
 * under the request id like any 500, and returned as the error that part reports.
 */
export function partFailure(logger: Logger, requestId: string | undefined, err: unknown, context: Record<string, unknown>): FhirError {
  const fhirError = toFhirError(err, requestId);
  if (fhirError.code === 'internal' || fhirError.code === 'unavailable') {
    logger.error('request part failed', { requestId, ...context, error: describe(err) });
  }
  return fhirError;
}

export function toFhirError(err: unknown, requestId: string | undefined): FhirError {
  if (err instanceof FhirError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string };
  if (e?.type === 'entity.too.large') return new FhirError('payload-too-large', `The request body is larger than the limit of this server`);
  if (e?.type === 'request.aborted') return new FhirError('invalid-request', 'The request body was not received completely');
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') return new FhirError('unsupported-media-type', e.message ?? 'Unsupported encoding');
  if (e?.type === 'entity.verify.failed' || e?.type === 'entity.parse.failed') return new FhirError('invalid-json', 'The body is not well-formed JSON');
  const client = clientError(err);
  if (client) return client;
  if (isDatabaseUnavailable(err)) return new FhirError('unavailable', `The database is unavailable; try again later (request ${requestId ?? '-'})`);
  return new FhirError('internal', `Unexpected error; quote request id ${requestId ?? '-'} to the operator`);
}

/**
 * What the HTTP machinery below our routes (body-parser, Express's router) refuses with a 4xx
 * `http-errors` error: a body that does not decompress as its Content-Encoding says (zlib's
 * `Z_DATA_ERROR`), a path with broken percent-encoding (`/Patient/%E0%A4%A`). The client's
 * mistake, so a 4xx, never a 500.
 */
function clientError(err: unknown): FhirError | undefined {
  const e = err as { status?: unknown; expose?: unknown; code?: unknown; message?: unknown };
  if (!e || typeof e.status !== 'number' || e.status < 400 || e.status >= 500 || e.expose !== true) return undefined;
  const code = typeof e.code === 'string' ? e.code : '';
  if (/^Z_|BROTLI|ZSTD/i.test(code)) {
    return new FhirError('invalid-request', 'The body could not be decoded as its Content-Encoding says (not valid gzip, deflate or br data)');
  }
  if (e.status === 413) return new FhirError('payload-too-large', 'The request body is larger than the limit of this server');
  if (e.status === 415) return new FhirError('unsupported-media-type', typeof e.message === 'string' ? e.message : 'Unsupported request encoding');
  if (/decode param/i.test(String(e.message))) return new FhirError('invalid-request', 'The URL path is not valid percent-encoding');
  return new FhirError('invalid-request', 'The request is malformed');
}

/**
 * Connection-level database failures, and a database that cannot take writes now (a lock or
 * statement timeout, a read-only database): the client did nothing wrong and may retry.
 */
function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { name?: string; code?: string; message?: string };
  if (!e) return false;
  if (e.name === 'SequelizeConnectionError' || e.name === 'SequelizeConnectionRefusedError' || e.name === 'SequelizeConnectionAcquireTimeoutError') return true;
  if (['ECONNREFUSED', 'ECONNRESET', '55P03', '57014', '25006', '57P01', '57P02', '57P03', '08006', '08001', '08003', 'SQLITE_BUSY', 'SQLITE_READONLY', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_CANTOPEN'].includes(e.code ?? '')) return true;
  return /Connection terminated|Client has encountered a connection error/.test(e.message ?? '');
}

function describe(err: unknown, depth = 0): unknown {
  if (err instanceof Error) {
    const cause = err.cause === undefined || depth >= 3 ? {} : { cause: describe(err.cause, depth + 1) };
    return { name: err.name, message: err.message, stack: err.stack, code: (err as { code?: string }).code, ...cause };
  }
  return err;
}

/** Every catalogue code, for the README table test. */
export const ERROR_CODES = Object.keys(ERRORS);
