import type { NextFunction, Request, Response } from 'express';
import { TOKEN_PATH } from '../access/audience';
import { FhirError, outcomeOf } from '../errors';
import { clientAddress, locals } from '../http/request';
import type { Logger } from '../log';
import type { AuditInteraction } from './balp';
import { RequestAudit, type AuditTrail } from './trail';

/**
 * Requests that touch no patient data and are not audited: capabilities, discovery, health. The
 * token endpoint is audited (an authentication event per request, see tokenRequestEvent).
 */
const UNAUDITED = new Set(['/metadata', '/.well-known/smart-configuration', '/.well-known/jwks.json', '/healthz']);

function defaultInteraction(method: string): AuditInteraction {
  switch (method) {
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return 'delete';
    default:
      return 'read';
  }
}

/** The audit state of this request (routes say what interaction it is). */
export function requestAudit(res: Response): RequestAudit | undefined {
  return res.locals.audit as RequestAudit | undefined;
}

/** Routes call this to name the interaction; searches and history also record their query. */
export function auditAs(req: Request, res: Response, interaction: AuditInteraction, options: { query?: boolean; operation?: string } = {}): void {
  const audit = requestAudit(res);
  if (!audit) return;
  audit.interaction = interaction;
  if (options.operation) audit.operation = options.operation;
  if (options.query) {
    // The path and query are the client's; the server in front of them is the fixed one, never
    // the Host or X-Forwarded-* a client could choose.
    audit.query = `${req.method} ${audit.server}${req.originalUrl}\nAccept: ${req.get('accept') ?? '*/*'}\nX-Request-Id: ${locals(res).requestId}`;
  }
}

/**
 * Holds every response until its AuditEvents are committed (DESIGN.md invariant 2): `res.end`
 * waits for the audit trail; if the events cannot be written the client gets a 503 and none of
 * the data (invariant 3, fail closed). Every other response path goes through `res.end`, so
 * nothing, not even a 304 or an error, leaves unaudited.
 */
export function holdResponses(trail: AuditTrail, logger: Logger) {
  return function hold(req: Request, res: Response, next: NextFunction): void {
    if (UNAUDITED.has(req.path) || !trail.enabled) return next();
    const audit = new RequestAudit(defaultInteraction(req.method), trail.server);
    if (req.path === TOKEN_PATH) {
      audit.tokenEndpoint = true;
      audit.query = `${req.method} ${trail.server}${TOKEN_PATH}`;
    }
    res.locals.audit = audit;
    const end = res.end.bind(res) as (...args: unknown[]) => Response;
    res.end = function heldEnd(this: Response, ...args: unknown[]): Response {
      if (audit.settled) return end(...args);
      audit.settled = true;
      const ctx = locals(res).ctx;
      const recorded = trail.record(audit, {
        requestId: locals(res).requestId,
        clientAddress: clientAddress(req),
        ctx: ctx?.clientId ? ctx : undefined,
        status: res.statusCode,
      });
      recorded.then(
        () => end(...args),
        (err: unknown) => {
          logger.error('audit write failed; the response was withheld', { requestId: locals(res).requestId, error: String(err) });
          const refusal = new FhirError('unavailable', `The audit trail cannot be written, so no data is returned (request ${locals(res).requestId}); try again later`);
          for (const h of res.getHeaderNames()) if (h !== 'x-request-id') res.removeHeader(h);
          res.statusCode = 503;
          res.setHeader('Content-Type', 'application/fhir+json; charset=utf-8');
          res.setHeader('Retry-After', '5');
          end(JSON.stringify(outcomeOf(refusal)));
        },
      );
      return res;
    } as Response['end'];
    next();
  };
}
