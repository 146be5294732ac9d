import { isIP } from 'node:net';
import type { Request, Response } from 'express';
import { isResourceType, type ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { FhirError } from '../errors';

/** Per-request state the pipeline puts on `res.locals`. */
export interface RequestLocals {
  requestId: string;
  ctx: AccessContext;
  baseUrl: string;
  format: ResponseFormat;
  started: number;
}

export interface ResponseFormat {
  /** The media type responses are sent as. */
  readonly mime: 'application/fhir+json' | 'application/json';
  readonly pretty: boolean;
}

export function locals(res: Response): RequestLocals {
  return res.locals as RequestLocals;
}

/** The request's AccessContext (set by the access middleware before any route runs). */
export function ctxOf(res: Response): AccessContext {
  const ctx = locals(res).ctx;
  if (!ctx) throw new Error('no access context on this request');
  return ctx;
}

/** A `:type` path segment that names a served resource type, or 404. */
export function resourceType(value: unknown): ResourceType {
  if (typeof value !== 'string' || !isResourceType(value)) {
    throw new FhirError('unknown-type', `Resource type '${typeof value === 'string' ? value : ''}' is not supported by this server (Patient, Consent, AuditEvent)`);
  }
  return value;
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** A logical id from the URL, checked against the FHIR id rules. */
export function logicalId(value: unknown): string {
  if (typeof value !== 'string' || !ID.test(value)) throw new FhirError('invalid-request', `'${typeof value === 'string' ? value : ''}' is not a valid resource id (1-64 of A-Z a-z 0-9 - .)`);
  return value;
}

/** A version id from the URL. */
export function versionId(value: unknown): number {
  if (typeof value !== 'string' || !/^[1-9]\d{0,8}$/.test(value)) throw new FhirError('not-found', `'${typeof value === 'string' ? value : ''}' is not a version of this resource`);
  return Number(value);
}

/** The Prefer header's preferences (RFC 7240), lower-cased names. */
export interface Prefer {
  readonly return?: 'minimal' | 'representation' | 'OperationOutcome';
  readonly handling?: 'strict' | 'lenient';
  readonly respondAsync: boolean;
}

export function preferOf(req: Request): Prefer {
  const header = req.get('prefer') ?? '';
  let ret: Prefer['return'];
  let handling: Prefer['handling'];
  let respondAsync = false;
  for (const part of header.split(/[,;]/)) {
    const [k, v] = part.split('=').map((s) => s?.trim().replace(/^"|"$/g, ''));
    const key = (k ?? '').toLowerCase();
    if (key === 'return') {
      if (v === 'minimal' || v === 'representation' || v === 'OperationOutcome') ret = v;
      else if (v?.toLowerCase() === 'operationoutcome') ret = 'OperationOutcome';
    } else if (key === 'handling' && (v === 'strict' || v === 'lenient')) handling = v;
    else if (key === 'respond-async') respondAsync = true;
  }
  return { return: ret, handling, respondAsync };
}

/** Query parameters as ordered [name, value] pairs, as received (repeats kept). */
export function queryPairs(req: Request): [string, string][] {
  const i = req.originalUrl.indexOf('?');
  if (i < 0) return [];
  return [...new URLSearchParams(req.originalUrl.slice(i + 1)).entries()];
}

/** Parses an If-Match / ETag value (`W/"3"` or `"3"` or `3`) into a version number. */
export function parseETag(value: string | undefined, header: string): number | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*(?:W\/)?"?([1-9]\d{0,8})"?\s*$/.exec(value);
  if (!m) throw new FhirError('invalid-request', `${header} must be a version ETag such as W/"3", got '${value}'`);
  return Number(m[1]);
}

/**
 * The client's network address for the audit trail: what Express derived from X-Forwarded-For
 * through the configured trusted proxies (CUSTODIAN_TRUST_PROXY), or the connection's peer. A
 * forwarded value that is not an IP address (a hop inside a trusted range can write anything)
 * is not recorded as one: the peer is.
 */
export function clientAddress(req: Request): string | undefined {
  return req.ip && isIP(req.ip) ? req.ip : req.socket.remoteAddress;
}
