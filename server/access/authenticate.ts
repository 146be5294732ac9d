import type { NextFunction, Request, Response } from 'express';
import { decodeJwt } from 'jose';
import { FhirError } from '../errors';
import { clientAddress, locals } from '../http/request';
import type { Audience } from './audience';
import { freezeContext } from './context';
import { TokenError, type TokenService } from './tokens';

/** Routes anyone may call: the CapabilityStatement, SMART discovery, the server's JWKS, the token endpoint and the health check. */
export const PUBLIC_PATHS = new Set(['/metadata', '/.well-known/smart-configuration', '/.well-known/jwks.json', '/auth/token', '/healthz']);

/**
 * Authenticates every request but the public ones: a valid bearer token becomes the request's
 * frozen AccessContext; anything else is a 401 with `WWW-Authenticate` (RFC 6750) and an
 * OperationOutcome, and no route runs.
 */
export function authenticate(tokens: TokenService, audience: Audience) {
  return async function checkToken(req: Request, res: Response, next: NextFunction): Promise<void> {
    const { requestId } = locals(res);
    if (PUBLIC_PATHS.has(req.path)) {
      locals(res).ctx = freezeContext({ requestId, clientId: null, roles: [], scopes: [], purposeOfUse: 'TREAT', address: clientAddress(req) });
      return next();
    }
    const header = req.get('authorization');
    const challenge = (error?: string, description?: string) =>
      `Bearer realm="${audience.issuer}"${error ? `, error="${error}"` : ''}${description ? `, error_description="${description.replace(/["\\]/g, "'")}"` : ''}`;
    if (!header) {
      throw new FhirError('unauthenticated', 'This server needs a bearer token (SMART Backend Services): see /.well-known/smart-configuration', {
        headers: { 'WWW-Authenticate': challenge() },
      });
    }
    const m = /^Bearer\s+([A-Za-z0-9\-_.~+/]+=*)\s*$/i.exec(header);
    if (!m) {
      throw new FhirError('unauthenticated', 'The Authorization header must be "Bearer <access token>"', {
        headers: { 'WWW-Authenticate': challenge('invalid_request', 'malformed Authorization header') },
      });
    }
    try {
      // The audiences a token may name are the server's own, fixed at start-up: never this request's Host or X-Forwarded-Host.
      const v = await tokens.verify(m[1]);
      locals(res).ctx = freezeContext({
        requestId,
        clientId: v.clientId,
        clientName: v.clientName,
        organization: v.organization,
        practitioner: v.practitioner,
        roles: v.roles,
        scopes: v.scopes,
        purposeOfUse: v.purposeOfUse,
        registeredPurposes: v.registeredPurposes,
        patient: v.patient,
        tokenId: v.tokenId,
        issuer: v.issuer,
        address: clientAddress(req),
        ...(v.clientKey ? { clientKey: v.clientKey } : {}),
      });
    } catch (err) {
      if (!(err instanceof TokenError)) throw err;
      // A refused request is audited with whatever identity it presented (unverified).
      const audit = res.locals.audit as { presented?: { clientId?: string; tokenId?: string } } | undefined;
      if (audit) {
        try {
          const claims = decodeJwt(m[1]);
          audit.presented = { clientId: String(claims.client_id ?? claims.sub ?? '') || undefined, tokenId: claims.jti };
        } catch {
          audit.presented = {};
        }
      }
      throw new FhirError('unauthenticated', `Invalid access token: ${err.description}`, { headers: { 'WWW-Authenticate': challenge('invalid_token', err.description) } });
    }
    next();
  };
}
