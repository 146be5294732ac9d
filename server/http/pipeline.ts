import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Config } from '../config';
import type { Logger } from '../log';
import { locals } from './request';

const REQUEST_ID = /^[A-Za-z0-9._:\-]{1,128}$/;

/** X-Request-Id: the client's, when it is a sane token, otherwise a fresh UUID; echoed on the response. */
export function requestId(req: Request, res: Response, next: NextFunction): void {
  const given = req.get('x-request-id');
  const id = given && REQUEST_ID.test(given) ? given : randomUUID();
  locals(res).requestId = id;
  locals(res).started = performance.now();
  res.setHeader('X-Request-Id', id);
  next();
}

const HOST = /^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/;

/**
 * The base URL of this request's links (`fullUrl`, paging, `Location`, the CapabilityStatement's
 * implementation.url): the configured one, or rebuilt from X-Forwarded-Proto / X-Forwarded-Host
 * (first value each, as a reverse proxy sets them) and Host. Malformed header values are ignored
 * rather than echoed into links.
 *
 * Links only. A client chooses these headers, so nothing that decides access may use this value:
 * the URLs tokens and assertions are checked against are the app's fixed `Audience`
 * (access/audience.ts).
 */
export function baseUrl(config: Config) {
  return function setBaseUrl(req: Request, res: Response, next: NextFunction): void {
    if (config.baseUrl) {
      locals(res).baseUrl = config.baseUrl;
      return next();
    }
    const first = (h: string | undefined) => h?.split(',')[0].trim();
    const fproto = first(req.get('x-forwarded-proto'));
    const proto = fproto === 'https' || fproto === 'http' ? fproto : req.protocol;
    const fhost = first(req.get('x-forwarded-host'));
    const host = fhost && HOST.test(fhost) ? fhost : req.get('host') && HOST.test(req.get('host')!) ? req.get('host')! : `localhost:${config.port}`;
    const prefix = first(req.get('x-forwarded-prefix'));
    const safePrefix = prefix && /^(\/[A-Za-z0-9._~\-]+)+$/.test(prefix) ? prefix : '';
    locals(res).baseUrl = `${proto}://${host}${safePrefix}`;
    next();
  };
}

/**
 * One structured log line per request (request id, client, method, path, status, duration):
 * operational logging, separate from the audit trail.
 */
export function requestLog(logger: Logger) {
  return function logRequest(req: Request, res: Response, next: NextFunction): void {
    res.on('finish', () => {
      const l = locals(res);
      logger.info('request', {
        requestId: l.requestId,
        client: l.ctx?.clientId ?? null,
        method: req.method,
        path: req.path,
        status: res.statusCode,
        durationMs: Math.round((performance.now() - l.started) * 10) / 10,
      });
    });
    next();
  };
}
