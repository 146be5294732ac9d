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
export function auditAs(req: Request, res: Response, interaction: AuditInteraction, options: { query?: boolean; operation?: string } & AskedBeyondUrl = {}): void {
  const audit = requestAudit(res);
  if (!audit) return;
  audit.interaction = interaction;
  if (options.operation) audit.operation = options.operation;
  if (options.query) recordQuery(req, res, options);
}

/** What a request asked that its URL does not say. */
export interface AskedBeyondUrl {
  /** A POST _search's form parameters: searched after the URL's own, so recorded after them. */
  readonly form?: readonly (readonly [string, string])[];
  /** A conditional create's If-None-Exist criteria (the header's value), which it searched before writing. */
  readonly ifNoneExist?: string;
  /** A Bundle's reading and searching entries, one line each (`Bundle.entry[2]: GET Patient?identifier=…`, see BundleRequestOptions.asked). */
  readonly entries?: readonly string[];
}

/**
 * The most of what a request asked (its path and query, a form's parameters, a Bundle's read
 * entries) that its events record. Every event of the request carries the text, one per patient
 * whose data it touched (a thousand on a page), so it must stay small. Node refuses a GET whose
 * request line and headers pass 16 KiB (its default), which already bounds a GET search's text;
 * a form or a Bundle (up to CUSTODIAN_MAX_BODY) is recorded to the same bound, and what is cut
 * off is counted in the text, so an auditor sees that there was more.
 */
export const QUERY_LIMIT = 16 * 1024;

/**
 * Records what the request asked for its events' query entity (BALP: the request, base64):
 * the request line with everything it searched — the URL's query string, then a POST
 * _search's form parameters as the search merges them, keeping the method so an auditor sees
 * how it was asked — the headers that shape the answer (a conditional create's If-None-Exist
 * among them), and a Bundle's reading and searching entries.
 */
export function recordQuery(req: Request, res: Response, asked: AskedBeyondUrl = {}): void {
  const audit = requestAudit(res);
  if (!audit) return;
  // The path and query are the client's; the server in front of them is the fixed one, never
  // the Host or X-Forwarded-* a client could choose.
  const target = clip(withForm(req.originalUrl, asked.form ?? []), QUERY_LIMIT);
  const lines = [`${req.method} ${audit.server}${target}`, `Accept: ${req.get('accept') ?? '*/*'}`, `X-Request-Id: ${locals(res).requestId}`];
  // A conditional create's criteria, given by its route: the header on any other request is not acted on, so not recorded.
  if (asked.ifNoneExist !== undefined) lines.push(`If-None-Exist: ${clip(asked.ifNoneExist, QUERY_LIMIT)}`);
  if (asked.entries?.length) lines.push(clip(asked.entries.join('\n'), Math.max(QUERY_LIMIT - target.length, 0)));
  audit.query = lines.join('\n');
}

/** The URL with form parameters appended to its query string, form-encoded as they were sent. */
function withForm(url: string, form: readonly (readonly [string, string])[]): string {
  if (form.length === 0) return url;
  const encoded = new URLSearchParams(form as [string, string][]).toString();
  const q = url.indexOf('?');
  if (q < 0) return `${url}?${encoded}`;
  return url.endsWith('?') || url.endsWith('&') ? `${url}${encoded}` : `${url}&${encoded}`;
}

/** The text cut to `max` characters (never inside a surrogate pair), saying how much was cut. */
function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max;
  if (end > 0 && /[\uD800-\uDBFF]/.test(text[end - 1])) end--;
  return `${text.slice(0, end)}... (${text.length - end} more characters not recorded)`;
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
