import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  importJWK,
  jwtVerify,
  SignJWT,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { ODS_SYSTEM, type OrganizationRef, type Role } from './context';
import type { SigningKey } from './keys';
import { DEFAULT_PURPOSE, parsePurpose } from './purpose';
import type { ClientRegistry } from './registry';
import { grant } from './scopes';

/**
 * SMART Backend Services token issuing and checking
 * (https://hl7.org/fhir/smart-app-launch/backend-services.html): client assertions (RFC 7523,
 * private_key_jwt) in, short-lived access tokens signed by the server out, and verification of
 * those (and of trusted external issuers' tokens) on every request.
 */

/** An OAuth error at the token endpoint (RFC 6749 §5.2). */
export class OAuthError extends Error {
  constructor(
    readonly error: 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'invalid_scope' | 'unsupported_grant_type',
    readonly description: string,
  ) {
    super(`${error}: ${description}`);
    this.name = 'OAuthError';
  }
  get status(): number {
    return this.error === 'invalid_client' ? 401 : 400;
  }
}

/** A bearer token that cannot be accepted (RFC 6750 §3.1 `invalid_token`). */
export class TokenError extends Error {
  constructor(readonly description: string) {
    super(description);
    this.name = 'TokenError';
  }
}

/** Remembers client-assertion ids until they expire; false when one was seen before (a replay). */
export type ReplayGuard = (key: string, expiresAt: number) => Promise<boolean>;

export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
}

/** What a verified access token says about the caller. */
export interface VerifiedToken {
  readonly clientId: string;
  readonly clientName?: string;
  readonly organization?: OrganizationRef;
  readonly practitioner?: string;
  readonly roles: readonly Role[];
  readonly scopes: readonly string[];
  readonly purposeOfUse: string;
  readonly registeredPurposes?: readonly string[];
  readonly patient?: string;
  readonly tokenId?: string;
  readonly issuer: string;
  readonly expiresAt: number;
}

export interface TrustedIssuer {
  readonly issuer: string;
  readonly keys: JWKSGetter;
  readonly algorithms: string[];
}
type JWKSGetter = JWTVerifyGetKey;

export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const ASSERTION_ALGORITHMS = ['RS384', 'ES384'];
/** A client assertion may not live longer than this (SMART: "no more than five minutes in the future"). */
const MAX_ASSERTION_LIFETIME = 300;

export interface TokenServiceOptions {
  readonly key: SigningKey;
  readonly registry: ClientRegistry;
  readonly lifetime: number;
  readonly now: () => number;
  readonly replay: ReplayGuard;
  readonly trusted: readonly TrustedIssuer[];
}

export class TokenService {
  private readonly cache = new Map<string, VerifiedToken>();

  constructor(private readonly options: TokenServiceOptions) {}

  /**
   * The client_credentials grant with a signed client assertion. Checks, in this order: grant
   * type, assertion type, the assertion's header (alg RS384/ES384, kid), its client, the key,
   * the signature and claims (iss = sub = client, aud = token endpoint, exp within 5 minutes,
   * jti), replay, scopes, purpose of use.
   */
  async issue(form: URLSearchParams, tokenEndpoint: string, audience: string): Promise<TokenResponse> {
    const { registry, now } = this.options;
    if (form.get('grant_type') !== 'client_credentials') throw new OAuthError('unsupported_grant_type', 'grant_type must be client_credentials');
    if (form.get('client_assertion_type') !== ASSERTION_TYPE) throw new OAuthError('invalid_client', `client_assertion_type must be ${ASSERTION_TYPE}`);
    const assertion = form.get('client_assertion');
    if (!assertion) throw new OAuthError('invalid_client', 'client_assertion is missing');
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(assertion);
      unverified = decodeJwt(assertion);
    } catch {
      throw new OAuthError('invalid_client', 'client_assertion is not a JWT');
    }
    if (!header.alg || !ASSERTION_ALGORITHMS.includes(header.alg)) throw new OAuthError('invalid_client', `client_assertion must be signed with RS384 or ES384, not ${header.alg ?? 'nothing'}`);
    if (!header.kid) throw new OAuthError('invalid_client', 'client_assertion header has no kid');
    const clientId = unverified.iss;
    if (typeof clientId !== 'string' || unverified.sub !== clientId) throw new OAuthError('invalid_client', 'iss and sub of the client_assertion must both be the client_id');
    const client = registry.get(clientId);
    if (!client) throw new OAuthError('invalid_client', `unknown client ${clientId}`);
    const jwk = client.keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new OAuthError('invalid_client', `kid ${header.kid} is not in the registered JWKS of ${clientId}`);
    let payload: JWTPayload;
    try {
      const key = await importJWK({ ...jwk, alg: header.alg } as JWK, header.alg);
      ({ payload } = await jwtVerify(assertion, key, {
        algorithms: [header.alg],
        issuer: clientId,
        subject: clientId,
        audience: tokenEndpoint,
        currentDate: new Date(now()),
        requiredClaims: ['exp', 'jti'],
      }));
    } catch (err) {
      throw new OAuthError('invalid_client', `client_assertion rejected: ${(err as Error).message}`);
    }
    const nowSeconds = Math.floor(now() / 1000);
    if (payload.exp! - nowSeconds > MAX_ASSERTION_LIFETIME) throw new OAuthError('invalid_client', 'client_assertion exp is more than 5 minutes in the future');
    if (!(await this.options.replay(`${clientId}|${payload.jti}`, payload.exp! * 1000))) {
      throw new OAuthError('invalid_client', `client_assertion jti ${payload.jti} was already used`);
    }

    const requested = (form.get('scope') ?? '').split(/\s+/).filter(Boolean);
    if (requested.length === 0) throw new OAuthError('invalid_request', 'scope is required');
    const granted = grant(requested, client.scopes);
    if (granted.length === 0) throw new OAuthError('invalid_scope', `none of the requested scopes (${requested.join(' ')}) is registered for ${clientId}`);

    const purpose = this.purposeOf(payload, form);
    if (!client.purposes.includes(purpose)) throw new OAuthError('invalid_scope', `purpose of use ${purpose} is not registered for ${clientId} (registered: ${client.purposes.join(', ')})`);

    const lifetime = this.options.lifetime;
    const token = await new SignJWT({ client_id: clientId, scope: granted.join(' '), purpose_of_use: [purpose] })
      .setProtectedHeader({ alg: this.options.key.alg, kid: this.options.key.kid, typ: 'at+jwt' })
      .setIssuer(audience)
      .setAudience(audience)
      .setSubject(clientId)
      .setJti(randomUUID())
      .setIssuedAt(nowSeconds)
      .setExpirationTime(nowSeconds + lifetime)
      .sign(this.options.key.privateKey);
    return { access_token: token, token_type: 'Bearer', expires_in: lifetime, scope: granted.join(' ') };
  }

  /** The purpose asked for: the HL7 B2B extension of the assertion, or the purpose_of_use parameter; TREAT by default. */
  private purposeOf(payload: JWTPayload, form: URLSearchParams): string {
    const b2b = (payload.extensions as Record<string, unknown> | undefined)?.['hl7-b2b'] as { purpose_of_use?: unknown } | undefined;
    const asked: unknown[] = [];
    if (b2b?.purpose_of_use !== undefined) asked.push(...(Array.isArray(b2b.purpose_of_use) ? b2b.purpose_of_use : [b2b.purpose_of_use]));
    for (const p of form.getAll('purpose_of_use')) asked.push(...p.split(/\s+/).filter(Boolean));
    if (asked.length === 0) return DEFAULT_PURPOSE;
    const codes = [...new Set(asked.map((a) => parsePurpose(a) ?? invalidPurpose(a)))];
    if (codes.length > 1) throw new OAuthError('invalid_request', `one purpose of use per token, not ${codes.join(', ')}`);
    return codes[0];
  }

  /**
   * Checks a bearer token: our own (ES384/RS384 with our key, our issuer, still-registered client)
   * or a trusted external issuer's. `audiences` are the base URLs this request may be addressed to.
   */
  async verify(token: string, audiences: readonly string[]): Promise<VerifiedToken> {
    const { now } = this.options;
    const cached = this.cache.get(token);
    if (cached) {
      if (cached.expiresAt <= now()) {
        this.cache.delete(token);
        throw new TokenError('the access token has expired');
      }
      return cached;
    }
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch {
      throw new TokenError('the access token is not a JWT');
    }
    const own = this.options.key;
    const trusted = this.options.trusted.find((t) => t.issuer === unverified.iss);
    let payload: JWTPayload;
    try {
      if (trusted) {
        ({ payload } = await jwtVerify(token, trusted.keys, { algorithms: trusted.algorithms, issuer: trusted.issuer, audience: [...audiences], currentDate: new Date(now()), clockTolerance: 30, requiredClaims: ['exp'] }));
      } else {
        if (header.kid !== undefined && header.kid !== own.kid) throw new TokenError('the access token was not signed by this server');
        ({ payload } = await jwtVerify(token, own.publicKey, { algorithms: [own.alg], audience: [...audiences], currentDate: new Date(now()), requiredClaims: ['exp', 'iss'] }));
        if (!audiences.includes(payload.iss!)) throw new TokenError('the access token was issued for another server');
      }
    } catch (err) {
      if (err instanceof TokenError) throw err;
      const e = err as { code?: string; message: string };
      if (e.code === 'ERR_JWT_EXPIRED') throw new TokenError('the access token has expired');
      if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && /nbf/.test(e.message)) throw new TokenError('the access token is not valid yet');
      if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && /aud/.test(e.message)) throw new TokenError('the access token is for another audience');
      throw new TokenError(`the access token is not valid: ${e.message}`);
    }
    const verified = trusted ? this.fromExternal(payload, trusted) : this.fromOwn(payload);
    if (this.cache.size >= 10000) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(token, verified);
    return verified;
  }

  private fromOwn(payload: JWTPayload): VerifiedToken {
    const clientId = String(payload.client_id ?? payload.sub);
    const client = this.options.registry.get(clientId);
    if (!client) throw new TokenError(`client ${clientId} is no longer registered`);
    const purpose = Array.isArray(payload.purpose_of_use) ? parsePurpose(payload.purpose_of_use[0]) : null;
    if (!purpose) throw new TokenError('the access token has no purpose of use');
    return {
      clientId,
      clientName: client.name,
      organization: client.organization,
      roles: client.roles,
      scopes: String(payload.scope ?? '').split(' ').filter(Boolean),
      purposeOfUse: purpose,
      registeredPurposes: client.purposes,
      tokenId: payload.jti,
      issuer: payload.iss!,
      expiresAt: payload.exp! * 1000,
    };
  }

  private fromExternal(payload: JWTPayload, issuer: TrustedIssuer): VerifiedToken {
    const clientId = String(payload.client_id ?? payload.azp ?? payload.sub ?? '');
    if (!clientId) throw new TokenError('the access token names no client (client_id, azp or sub)');
    const rawPurpose = Array.isArray(payload.purpose_of_use) ? payload.purpose_of_use[0] : payload.purpose_of_use;
    const purpose = rawPurpose === undefined ? DEFAULT_PURPOSE : parsePurpose(rawPurpose);
    if (!purpose) throw new TokenError(`purpose_of_use ${JSON.stringify(rawPurpose)} is not a v3-ActReason code`);
    const fhirUser = typeof payload.fhirUser === 'string' ? payload.fhirUser.replace(/^.*\/(Practitioner|PractitionerRole)\//, '$1/') : undefined;
    const patient = typeof payload.patient === 'string' ? payload.patient.replace(/^Patient\//, '') : undefined;
    return {
      clientId,
      organization: organizationClaim(payload.organization),
      practitioner: fhirUser,
      roles: [],
      scopes: String(payload.scope ?? '').split(' ').filter(Boolean),
      purposeOfUse: purpose,
      patient,
      tokenId: payload.jti,
      issuer: issuer.issuer,
      expiresAt: (payload.exp ?? 0) * 1000,
    };
  }
}

function invalidPurpose(value: unknown): never {
  throw new OAuthError('invalid_request', `purpose of use ${JSON.stringify(value)} is not a v3-ActReason code (e.g. TREAT or urn:oid:2.16.840.1.113883.5.8#TREAT)`);
}

/** An `organization` claim: an ODS code, a Reference string, or a Reference object. */
function organizationClaim(value: unknown): OrganizationRef | undefined {
  if (typeof value === 'string') return /^Organization\//.test(value) ? { reference: value } : { identifier: { system: ODS_SYSTEM, value } };
  if (value && typeof value === 'object') {
    const o = value as OrganizationRef;
    if (o.reference || o.identifier?.value) return { reference: o.reference, identifier: o.identifier ? { system: o.identifier.system ?? ODS_SYSTEM, value: o.identifier.value } : undefined };
  }
  return undefined;
}

/**
 * Trusted external issuers from a JSON file:
 * `[{"issuer": "https://idp.example", "jwks": {"keys": [...]}, "algorithms": ["RS256"]}]`
 * (`jwks_file` instead of `jwks` points at a JWKS file; algorithms default to RS256, RS384, ES256, ES384).
 */
export function loadTrustedIssuers(file: string | undefined): TrustedIssuer[] {
  if (!file) return [];
  const list = JSON.parse(fs.readFileSync(file, 'utf8')) as { issuer?: string; jwks?: { keys: JWK[] }; jwks_file?: string; algorithms?: string[] }[];
  if (!Array.isArray(list)) throw new Error(`${file}: must be a JSON array of issuers`);
  return list.map((entry, i) => {
    if (!entry.issuer) throw new Error(`${file}: entry ${i} has no issuer`);
    const jwks = entry.jwks ?? (entry.jwks_file ? (JSON.parse(fs.readFileSync(entry.jwks_file, 'utf8')) as { keys: JWK[] }) : undefined);
    if (!jwks?.keys?.length) throw new Error(`${file}: entry ${i} (${entry.issuer}) needs jwks or jwks_file`);
    const algorithms = entry.algorithms ?? ['RS256', 'RS384', 'ES256', 'ES384'];
    if (algorithms.some((a) => !/^(RS|PS|ES)(256|384|512)$|^EdDSA$/.test(a))) throw new Error(`${file}: entry ${i}: only asymmetric algorithms are accepted`);
    return { issuer: entry.issuer, keys: createLocalJWKSet(jwks), algorithms };
  });
}
