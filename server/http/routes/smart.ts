import { Router, type Request, type Response } from 'express';
import { TOKEN_PATH, type Audience } from '../../access/audience';
import type { SigningKey } from '../../access/keys';
import { tokenRequestFacts } from '../../access/token-audit';
import { OAuthError, type TokenService } from '../../access/tokens';
import { requestAudit } from '../../audit/hold';
import { FhirError } from '../../errors';
import type { Logger } from '../../log';

export { TOKEN_PATH };

/** Scopes the server understands (advertised in discovery). */
export const SUPPORTED_SCOPES = [
  'system/Patient.cruds', 'system/Consent.cruds', 'system/AuditEvent.cr', 'system/AuditEvent.rs', 'system/*.read', 'system/*.write',
  'user/Patient.rs', 'user/Consent.cruds', 'patient/Patient.rs', 'patient/Consent.rs', 'patient/AuditEvent.rs',
];

/**
 * SMART discovery and the token endpoint
 * (https://hl7.org/fhir/smart-app-launch/conformance.html, backend-services.html).
 *
 * Everything here that names the server comes from `audience` (fixed at start-up), never from
 * the request: discovery is the same document for every caller, so shared caches may keep it.
 */
export function smartRoutes(tokens: TokenService, key: SigningKey, audience: Audience, logger: Logger): Router {
  const router = Router();
  const discovery = JSON.stringify({
    issuer: audience.issuer,
    jwks_uri: `${audience.issuer}/.well-known/jwks.json`,
    token_endpoint: audience.tokenEndpoint,
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    scopes_supported: SUPPORTED_SCOPES,
    capabilities: ['client-confidential-asymmetric', 'permission-v1', 'permission-v2'],
    purposes_of_use_supported: ['TREAT', 'ETREAT', 'BTG', 'HOPERAT', 'HRESCH', 'PUBHLTH', 'HPAYMT', 'PATRQT'],
  });

  router.get('/.well-known/smart-configuration', (_req, res) => {
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Cache-Control', 'public, max-age=3600');
    res.end(discovery);
  });

  router.get('/.well-known/jwks.json', (_req, res) => {
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.end(JSON.stringify({ keys: [key.publicJwk] }));
  });

  router.post(TOKEN_PATH, async (req: Request, res: Response) => {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Pragma', 'no-cache');
    const form = res.locals.bodyKind === 'form' ? (req.body as URLSearchParams) : undefined;
    // Every answer, a token or a refusal, is an authentication event on the audit trail.
    const audited = (result: Parameters<typeof tokenRequestFacts>[2]) => {
      const audit = requestAudit(res);
      if (audit) audit.token = tokenRequestFacts(form, audience.issuer, result);
    };
    const oauthError = (err: OAuthError) => {
      audited(err);
      if (err.logDetail) logger.info('token request refused', { requestId: res.locals.requestId, error: err.error, detail: err.logDetail });
      res.status(err.status).setHeader('Content-Type', 'application/json; charset=utf-8');
      if (err.status === 401) res.setHeader('WWW-Authenticate', 'private_key_jwt');
      res.end(JSON.stringify({ error: err.error, error_description: err.description }));
    };
    if (res.locals.bodyKind !== 'form') return oauthError(new OAuthError('invalid_request', 'the token request must be application/x-www-form-urlencoded'));
    try {
      const response = await tokens.issue(req.body as URLSearchParams);
      audited(response);
      res.status(200).setHeader('Content-Type', 'application/json; charset=utf-8');
      res.end(JSON.stringify(response));
    } catch (err) {
      if (err instanceof OAuthError) return oauthError(err);
      throw err;
    }
  });

  router.all(TOKEN_PATH, (req) => {
    throw new FhirError('method-not-allowed', `${req.method} ${TOKEN_PATH}: the token endpoint takes POST`, { headers: { Allow: 'POST' } });
  });
  return router;
}
