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

export function toFhirError(err: unknown, requestId: string | undefined): FhirError {
  if (err instanceof FhirError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string };
  if (e?.type === 'entity.too.large') return new FhirError('payload-too-large', `The request body is larger than the limit of this server`);
  if (e?.type === 'request.aborted') return new FhirError('invalid-request', 'The request body was not received completely');
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') return new FhirError('unsupported-media-type', e.message ?? 'Unsupported encoding');
  if (e?.type === 'entity.verify.failed' || e?.type === 'entity.parse.failed') return new FhirError('invalid-json', 'The body is not well-formed JSON');
  if (isDatabaseUnavailable(err)) return new FhirError('unavailable', `The database is unavailable; try again later (request ${requestId ?? '-'})`);
  return new FhirError('internal', `Unexpected error; quote request id ${requestId ?? '-'} to the operator`);
}

/** Connection-level database failures: the client did nothing wrong and may retry. */
function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { name?: string; code?: string; message?: string };
  if (!e) return false;
  if (e.name === 'SequelizeConnectionError' || e.name === 'SequelizeConnectionRefusedError' || e.name === 'SequelizeConnectionAcquireTimeoutError') return true;
  if (['ECONNREFUSED', 'ECONNRESET', '57P01', '57P02', '57P03', '08006', '08001', '08003', 'SQLITE_BUSY', 'SQLITE_READONLY', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_CANTOPEN'].includes(e.code ?? '')) return true;
  return /Connection terminated|Client has encountered a connection error/.test(e.message ?? '');
}

function describe(err: unknown): unknown {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack, code: (err as { code?: string }).code };
  return err;
}

/** Every catalogue code, for the README table test. */
export const ERROR_CODES = Object.keys(ERRORS);
