import { decodeJwt, decodeProtectedHeader } from 'jose';
import type { TokenRequestFacts } from '../audit/balp';
import { OAuthError, type TokenResponse } from './tokens';

/** Parameters of a token request recorded as sent; any other is recorded by name only. */
const RECORDED = new Set(['grant_type', 'scope', 'purpose_of_use', 'client_assertion_type', 'client_id']);

/** The client assertion as the audit may keep it: who it claims to be and which key and id, never the signed JWT. */
function assertionSummary(assertion: string): { text: string; clientId?: string } {
  try {
    const claims = decodeJwt(assertion);
    const header = decodeProtectedHeader(assertion);
    const clientId = typeof claims.iss === 'string' && claims.iss ? claims.iss : undefined;
    return { text: `(JWT not recorded: iss=${claims.iss ?? '-'}, sub=${claims.sub ?? '-'}, kid=${header.kid ?? '-'}, jti=${claims.jti ?? '-'})`, clientId };
  } catch {
    return { text: '(not a JWT; not recorded)' };
  }
}

/**
 * What the audit trail records of one request to the token endpoint: the request without its
 * credentials (the assertion is summarised, not kept: it is a signed credential), the client
 * it claimed to be, and what was answered — with, for a refusal, the reason only the server
 * log and the audit trail are told (unknown client, unregistered key, bad signature).
 */
export function tokenRequestFacts(form: URLSearchParams | undefined, server: string, result: TokenResponse | OAuthError): TokenRequestFacts {
  const parts: string[] = [];
  let clientId: string | undefined;
  for (const [name, value] of form ?? []) {
    if (name === 'client_assertion') {
      const summary = assertionSummary(value);
      clientId ??= summary.clientId;
      parts.push(`client_assertion=${summary.text}`);
    } else if (RECORDED.has(name)) parts.push(`${name}=${value.slice(0, 500)}`);
    else parts.push(`${name.slice(0, 100)}=(not recorded)`);
  }
  if (!clientId && form?.get('client_id')) clientId = form.get('client_id')!.slice(0, 256);
  const request = `POST ${server}/auth/token\n${parts.join('\n')}`;
  if (result instanceof OAuthError) {
    return { clientId, result: result.error, description: `${result.description}${result.logDetail ? ` (${result.logDetail})` : ''}`, request };
  }
  const issued = decodeJwt(result.access_token);
  return { clientId: String(issued.client_id ?? clientId ?? ''), result: 'issued', request, tokenId: typeof issued.jti === 'string' ? issued.jti : undefined, scope: result.scope };
}
