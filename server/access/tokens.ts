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
import { ODS_SYSTEM, SERVER_CLIENT_ID, type OrganizationRef, type Role } from './context';
import { jwkThumbprint, type SigningKey } from './keys';
import { actReasonCodes, DEFAULT_PURPOSE, parsePurpose } from './purpose';
import type { Audience } from './audience';
import type { ClientRegistry, RegisteredClient } from './registry';
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
    /** What the caller is told. */
    readonly description: string,
    /** What only the server log is told (why client authentication failed, for the operator). */
    readonly logDetail?: string,
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

/** What a verified access token says about the caller, as of this request. */
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
  /** Our own tokens: the thumbprint of the client key they were obtained with (absent on tokens from before the binding). */
  readonly clientKey?: string;
}

export interface TrustedIssuer {
  readonly issuer: string;
  readonly keys: JWKSGetter;
  readonly algorithms: string[];
  /** The purposes of use its tokens may carry (default: TREAT only); a token asking for another is refused. */
  readonly purposes: readonly string[];
}
type JWKSGetter = JWTVerifyGetKey;

export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const ASSERTION_ALGORITHMS = ['RS384', 'ES384'];
/** A client assertion may not live longer than this (SMART: "no more than five minutes in the future"). */
const MAX_ASSERTION_LIFETIME = 300;
/** Leeway on external issuers' exp and nbf (their clocks are not ours). */
const EXTERNAL_CLOCK_TOLERANCE = 30;
/** What an unknown client, a kid not in its JWKS and a bad signature all answer, so client ids cannot be enumerated. */
const AUTHENTICATION_FAILED = 'client authentication failed: the client_assertion was not signed by a key registered for its iss';

export interface TokenServiceOptions {
  readonly key: SigningKey;
  readonly registry: ClientRegistry;
  /** Who this server is in tokens and assertions (never taken from a request). */
  readonly audience: Audience;
  readonly lifetime: number;
  readonly now: () => number;
  readonly replay: ReplayGuard;
  readonly trusted: readonly TrustedIssuer[];
  /**
   * Our tokens issued (iat) before this time (ms) were issued before tokens were bound to the
   * client's key, and are accepted without `client_key` (the store's recorded cut-over); none after.
   */
  readonly unboundTokensBefore?: number;
}

/**
 * What a token's signature vouches for: the same for every request that presents the token, so
 * it may be cached (keyed by the exact token string, until it expires). Whatever can change
 * between requests (the clock, the client's registration) is checked per request in `admit`.
 */
interface VerifiedClaims {
  readonly trusted?: TrustedIssuer;
  readonly issuer: string;
  readonly audiences: readonly string[];
  /** ms; for external issuers the exp plus their clock tolerance. */
  readonly expiresAt: number;
  readonly notBefore?: number;
  readonly clientId: string;
  readonly scopes: readonly string[];
  readonly purposeOfUse: string;
  readonly tokenId?: string;
  /** Our own tokens: the RFC 7638 thumbprint of the registered key the client authenticated with. */
  readonly clientKey?: string;
  readonly practitioner?: string;
  readonly organization?: OrganizationRef;
  readonly patient?: string;
}

const CACHE_LIMIT = 10000;

export class TokenService {
  private readonly cache = new Map<string, VerifiedClaims>();
  /** A token's scopes narrowed to its client's registration, per registry entry (a reload makes new entries). */
  private readonly narrowed = new WeakMap<RegisteredClient, Map<string, readonly string[]>>();

  constructor(private readonly options: TokenServiceOptions) {}

  /**
   * The client_credentials grant with a signed client assertion. Checks, in this order: no
   * repeated parameter, grant type, assertion type, the assertion's header (alg RS384/ES384,
   * kid), iss = sub, its client and key, the signature and claims (aud = our token endpoint, exp
   * within 5 minutes, jti a string), replay, scopes, the B2B extension, purpose of use.
   */
  async issue(form: URLSearchParams): Promise<TokenResponse> {
    const { registry, now, audience } = this.options;
    const seen = new Set<string>();
    for (const [name, value] of form) {
      // RFC 6749 §3.2: "Request and response parameters MUST NOT be included more than once";
      // one sent without a value counts as omitted.
      if (value === '') continue;
      if (seen.has(name)) throw new OAuthError('invalid_request', `${name} is repeated; each parameter may be sent once (RFC 6749 section 3.2)`);
      seen.add(name);
    }
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
    // Until the signature checks out, every failure reads the same to the caller.
    const client = registry.get(clientId);
    if (!client) throw new OAuthError('invalid_client', AUTHENTICATION_FAILED, `unknown client ${clientId}`);
    const jwk = client.keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new OAuthError('invalid_client', AUTHENTICATION_FAILED, `kid ${header.kid} is not in the registered JWKS of ${clientId}`);
    let payload: JWTPayload;
    try {
      const key = await importJWK({ ...jwk, alg: header.alg } as JWK, header.alg);
      ({ payload } = await jwtVerify(assertion, key, {
        algorithms: [header.alg],
        issuer: clientId,
        subject: clientId,
        audience: [...audience.tokenEndpoints],
        currentDate: new Date(now()),
        requiredClaims: ['exp', 'jti'],
      }));
    } catch (err) {
      const e = err as { code?: string; message: string };
      if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' || e.code === 'ERR_JWT_EXPIRED') {
        // Claims are checked only once the signature is good: the caller holds the client's key.
        throw new OAuthError('invalid_client', `client_assertion rejected: ${e.message}${/aud/.test(e.message) ? ` (aud must be ${audience.tokenEndpoint})` : ''}`);
      }
      throw new OAuthError('invalid_client', AUTHENTICATION_FAILED, `client ${clientId}, kid ${header.kid}: ${e.message}`);
    }
    if (typeof payload.jti !== 'string' || payload.jti === '') throw new OAuthError('invalid_client', 'client_assertion jti must be a non-empty string (RFC 7519 section 4.1.7)');
    const nowSeconds = Math.floor(now() / 1000);
    if (payload.exp! - nowSeconds > MAX_ASSERTION_LIFETIME) throw new OAuthError('invalid_client', 'client_assertion exp is more than 5 minutes in the future');
    if (!(await this.options.replay(`${clientId}|${payload.jti}`, payload.exp! * 1000))) {
      throw new OAuthError('invalid_client', `client_assertion jti ${payload.jti} was already used`);
    }

    const requested = (form.get('scope') ?? '').split(/\s+/).filter(Boolean);
    if (requested.length === 0) throw new OAuthError('invalid_request', 'scope is required');
    const granted = grant(requested, client.scopes);
    if (granted.length === 0) throw new OAuthError('invalid_scope', `none of the requested scopes (${requested.join(' ')}) is registered for ${clientId}`);

    const purpose = this.purposeOf(payload, form) ?? defaultPurpose(client);
    if (!client.purposes.includes(purpose)) throw new OAuthError('invalid_scope', `purpose of use ${purpose} is not registered for ${clientId} (registered: ${client.purposes.join(', ')})`);

    const lifetime = this.options.lifetime;
    // Bound to the key that authenticated the client: taking that key out of the registry (a
    // rotation, or the client removed and added again with new keys) ends the token at once.
    const token = await new SignJWT({ client_id: clientId, scope: granted.join(' '), purpose_of_use: [purpose], client_key: jwkThumbprint(jwk) })
      .setProtectedHeader({ alg: this.options.key.alg, kid: this.options.key.kid, typ: 'at+jwt' })
      .setIssuer(audience.issuer)
      .setAudience(audience.issuer)
      .setSubject(clientId)
      .setJti(randomUUID())
      .setIssuedAt(nowSeconds)
      .setExpirationTime(nowSeconds + lifetime)
      .sign(this.options.key.privateKey);
    return { access_token: token, token_type: 'Bearer', expires_in: lifetime, scope: granted.join(' ') };
  }

  /**
   * The purpose asked for: the HL7 B2B extension of the assertion, or the purpose_of_use
   * parameter; undefined when none is asked for.
   */
  private purposeOf(payload: JWTPayload, form: URLSearchParams): string | undefined {
    const asked: unknown[] = [...b2bPurposes(payload.extensions)];
    for (const p of form.getAll('purpose_of_use')) asked.push(...p.split(/\s+/).filter(Boolean));
    if (asked.length === 0) return undefined;
    const codes = [...new Set(asked.map((a) => parsePurpose(a) ?? invalidPurpose(a)))];
    if (codes.length > 1) throw new OAuthError('invalid_request', `one purpose of use per token, not ${codes.join(', ')}`);
    return codes[0];
  }

  /**
   * Checks a bearer token: our own (signed with our key, issued by and for this server, its
   * client still registered) or a trusted external issuer's (addressed to this server). The
   * signature is checked once per token string; audience, expiry and the client's current
   * registration on every call.
   */
  async verify(token: string): Promise<VerifiedToken> {
    let claims = this.cache.get(token);
    if (!claims) {
      claims = await this.verifySignature(token);
      if (this.cache.size >= CACHE_LIMIT) this.evict();
      this.cache.set(token, claims);
    }
    try {
      return this.admit(claims);
    } catch (err) {
      if (claims.expiresAt <= this.options.now()) this.cache.delete(token);
      throw err;
    }
  }

  /** The per-request checks of a token whose signature is good: time, audience, and the client as registered now. */
  private admit(claims: VerifiedClaims): VerifiedToken {
    const { now, audience, registry } = this.options;
    const at = now();
    if (claims.expiresAt <= at) throw new TokenError('the access token has expired');
    if (claims.notBefore !== undefined && claims.notBefore > at) throw new TokenError('the access token is not valid yet');
    if (!claims.audiences.some((a) => audience.accepted.includes(a))) throw new TokenError('the access token is for another audience');
    const base = { clientId: claims.clientId, purposeOfUse: claims.purposeOfUse, tokenId: claims.tokenId, issuer: claims.issuer, expiresAt: claims.expiresAt };
    if (claims.trusted) {
      if (!claims.trusted.purposes.includes(claims.purposeOfUse)) throw new TokenError(`purpose_of_use ${claims.purposeOfUse} is not one ${claims.trusted.issuer} may assert here`);
      // A registered client's id is the registry's: what is kept by client id (its export jobs,
      // an audit source's own events) must not open to another issuer's token naming it.
      if (registry.get(claims.clientId)) throw new TokenError(`client ${claims.clientId} is registered here: ${claims.trusted.issuer} may not issue its tokens`);
      return { ...base, organization: claims.organization, practitioner: claims.practitioner, patient: claims.patient, roles: [], scopes: claims.scopes };
    }
    if (!audience.accepted.includes(claims.issuer)) throw new TokenError('the access token was issued for another server');
    const client = registry.get(claims.clientId);
    if (!client) throw new TokenError(`client ${claims.clientId} is no longer registered`);
    if (claims.clientKey !== undefined && !client.keyThumbprints.has(claims.clientKey)) throw new TokenError(`the key ${claims.clientId} obtained this token with is no longer registered`);
    if (!client.purposes.includes(claims.purposeOfUse)) throw new TokenError(`purpose of use ${claims.purposeOfUse} is no longer registered for ${claims.clientId}`);
    return {
      ...base,
      clientName: client.name,
      organization: client.organization,
      roles: client.roles,
      scopes: this.narrow(claims.scopes, client),
      registeredPurposes: client.purposes,
      ...(claims.clientKey ? { clientKey: claims.clientKey } : {}),
    };
  }

  /** The token's scopes that the client's registration still allows (a token cannot outlive a scope taken away). */
  private narrow(scopes: readonly string[], client: RegisteredClient): readonly string[] {
    let byScopes = this.narrowed.get(client);
    if (!byScopes) this.narrowed.set(client, (byScopes = new Map()));
    const key = scopes.join(' ');
    let result = byScopes.get(key);
    if (!result) {
      result = Object.freeze(grant(scopes, client.scopes));
      if (byScopes.size < 1000) byScopes.set(key, result);
    }
    return result;
  }

  /** Drops expired entries, or else the oldest one. */
  private evict(): void {
    const at = this.options.now();
    for (const [token, claims] of this.cache) if (claims.expiresAt <= at) this.cache.delete(token);
    if (this.cache.size >= CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
  }

  /** Signature, issuer, audience and time of a token not seen before. Nothing refused here is cached. */
  private async verifySignature(token: string): Promise<VerifiedClaims> {
    const { now, audience } = this.options;
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
        ({ payload } = await jwtVerify(token, trusted.keys, {
          algorithms: trusted.algorithms,
          issuer: trusted.issuer,
          audience: [...audience.accepted],
          currentDate: new Date(now()),
          clockTolerance: EXTERNAL_CLOCK_TOLERANCE,
          requiredClaims: ['exp'],
        }));
      } else {
        if (header.kid !== undefined && header.kid !== own.kid) throw new TokenError('the access token was not signed by this server');
        ({ payload } = await jwtVerify(token, own.publicKey, { algorithms: [own.alg], audience: [...audience.accepted], currentDate: new Date(now()), requiredClaims: ['exp', 'iss'] }));
        if (!audience.accepted.includes(payload.iss!)) throw new TokenError('the access token was issued for another server');
      }
    } catch (err) {
      if (err instanceof TokenError) throw err;
      const e = err as { code?: string; message: string };
      if (e.code === 'ERR_JWT_EXPIRED') throw new TokenError('the access token has expired');
      if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && /nbf/.test(e.message)) throw new TokenError('the access token is not valid yet');
      if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && /aud/.test(e.message)) throw new TokenError('the access token is for another audience');
      throw new TokenError(`the access token is not valid: ${e.message}`);
    }
    const claims = trusted ? externalClaims(payload, trusted) : ownClaims(payload, this.options.unboundTokensBefore ?? 0);
    // Refuse now what admit would refuse on every request anyway, so it is not cached.
    this.admit(claims);
    return Object.freeze(claims);
  }
}

/** The purpose a token gets when the client asks for none: TREAT when registered for it, else its first registered purpose. */
export function defaultPurpose(client: Pick<RegisteredClient, 'purposes'>): string {
  return client.purposes.includes(DEFAULT_PURPOSE) ? DEFAULT_PURPOSE : client.purposes[0];
}

/**
 * The purposes of use in an assertion's HL7 B2B authorization extension
 * (https://hl7.org/fhir/us/udap-security/b2b.html#b2b-authorization-extension-object):
 * `extensions` is an object of extension objects; `hl7-b2b` has `version` "1" and, if present,
 * `purpose_of_use` as an array of strings. Anything else is a malformed request, never a default.
 */
function b2bPurposes(extensions: unknown): readonly unknown[] {
  if (extensions === undefined) return [];
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(extensions)) throw new OAuthError('invalid_request', 'extensions in the client_assertion must be a JSON object of authorization extension objects');
  for (const [name, value] of Object.entries(extensions)) {
    if (!isObject(value)) throw new OAuthError('invalid_request', `extensions["${name}"] in the client_assertion must be a JSON object`);
  }
  const b2b = extensions['hl7-b2b'] as Record<string, unknown> | undefined;
  if (b2b === undefined) return [];
  if (b2b.version !== '1') throw new OAuthError('invalid_request', 'the hl7-b2b extension needs version "1"');
  if (b2b.purpose_of_use === undefined) return [];
  const purposes = b2b.purpose_of_use;
  if (!Array.isArray(purposes) || purposes.length === 0 || purposes.some((p) => typeof p !== 'string')) {
    throw new OAuthError('invalid_request', 'hl7-b2b purpose_of_use must be a non-empty array of strings such as "urn:oid:2.16.840.1.113883.5.8#TREAT"');
  }
  return purposes;
}

function ownClaims(payload: JWTPayload, unboundBefore: number): VerifiedClaims {
  const clientId = String(payload.client_id ?? payload.sub ?? '');
  if (!clientId) throw new TokenError('the access token names no client');
  const purpose = Array.isArray(payload.purpose_of_use) ? parsePurpose(payload.purpose_of_use[0]) : null;
  if (!purpose) throw new TokenError('the access token has no purpose of use');
  const bound = typeof payload.client_key === 'string' && payload.client_key !== '';
  const issuedUnbound = payload.client_key === undefined && typeof payload.iat === 'number' && payload.iat * 1000 < unboundBefore;
  if (!bound && !issuedUnbound) throw new TokenError('the access token names no client key');
  return {
    issuer: payload.iss!,
    audiences: audiencesOf(payload),
    expiresAt: payload.exp! * 1000,
    notBefore: payload.nbf === undefined ? undefined : payload.nbf * 1000,
    clientId,
    scopes: Object.freeze(String(payload.scope ?? '').split(' ').filter(Boolean)),
    purposeOfUse: purpose,
    tokenId: typeof payload.jti === 'string' ? payload.jti : undefined,
    ...(bound ? { clientKey: payload.client_key as string } : {}),
  };
}

function externalClaims(payload: JWTPayload, issuer: TrustedIssuer): VerifiedClaims {
  const clientId = String(payload.client_id ?? payload.azp ?? payload.sub ?? '');
  if (!clientId) throw new TokenError('the access token names no client (client_id, azp or sub)');
  if (clientId === SERVER_CLIENT_ID) throw new TokenError(`the access token names the server's own client id (${SERVER_CLIENT_ID})`);
  const rawPurpose = Array.isArray(payload.purpose_of_use) ? (payload.purpose_of_use.length === 1 ? payload.purpose_of_use[0] : payload.purpose_of_use) : payload.purpose_of_use;
  const purpose = rawPurpose === undefined ? DEFAULT_PURPOSE : parsePurpose(rawPurpose);
  if (!purpose) throw new TokenError(`purpose_of_use ${JSON.stringify(rawPurpose)} is not one v3-ActReason code`);
  const fhirUser = typeof payload.fhirUser === 'string' ? payload.fhirUser.replace(/^.*\/(Practitioner|PractitionerRole)\//, '$1/') : undefined;
  const patient = typeof payload.patient === 'string' ? payload.patient.replace(/^Patient\//, '') : undefined;
  return {
    trusted: issuer,
    issuer: issuer.issuer,
    audiences: audiencesOf(payload),
    expiresAt: ((payload.exp ?? 0) + EXTERNAL_CLOCK_TOLERANCE) * 1000,
    notBefore: payload.nbf === undefined ? undefined : (payload.nbf - EXTERNAL_CLOCK_TOLERANCE) * 1000,
    clientId,
    organization: organizationClaim(payload.organization),
    practitioner: fhirUser,
    scopes: Object.freeze(String(payload.scope ?? '').split(' ').filter(Boolean)),
    purposeOfUse: purpose,
    patient,
    tokenId: typeof payload.jti === 'string' ? payload.jti : undefined,
  };
}

function audiencesOf(payload: JWTPayload): readonly string[] {
  return Object.freeze(Array.isArray(payload.aud) ? payload.aud.filter((a): a is string => typeof a === 'string') : typeof payload.aud === 'string' ? [payload.aud] : []);
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
 * `[{"issuer": "https://idp.example", "jwks": {"keys": [...]}, "algorithms": ["RS256"], "purposes": ["TREAT"]}]`
 * (`jwks_file` instead of `jwks` points at a JWKS file; algorithms default to RS256, RS384, ES256,
 * ES384; `purposes`, the v3-ActReason purposes of use its tokens may assert, default to TREAT:
 * an issuer is trusted to say who is asking, and for what only as far as the operator allows).
 */
export function loadTrustedIssuers(file: string | undefined): TrustedIssuer[] {
  if (!file) return [];
  return parseTrustedIssuers(JSON.parse(fs.readFileSync(file, 'utf8')), file);
}

export function parseTrustedIssuers(json: unknown, file: string): TrustedIssuer[] {
  const list = json as { issuer?: string; jwks?: { keys: JWK[] }; jwks_file?: string; algorithms?: string[]; purposes?: unknown }[];
  if (!Array.isArray(list)) throw new Error(`${file}: must be a JSON array of issuers`);
  return list.map((entry, i) => {
    if (!entry.issuer) throw new Error(`${file}: entry ${i} has no issuer`);
    const jwks = entry.jwks ?? (entry.jwks_file ? (JSON.parse(fs.readFileSync(entry.jwks_file, 'utf8')) as { keys: JWK[] }) : undefined);
    if (!jwks?.keys?.length) throw new Error(`${file}: entry ${i} (${entry.issuer}) needs jwks or jwks_file`);
    const algorithms = entry.algorithms ?? ['RS256', 'RS384', 'ES256', 'ES384'];
    if (algorithms.some((a) => !/^(RS|PS|ES)(256|384|512)$|^EdDSA$/.test(a))) throw new Error(`${file}: entry ${i}: only asymmetric algorithms are accepted`);
    const purposes = entry.purposes ?? [DEFAULT_PURPOSE];
    if (!Array.isArray(purposes) || purposes.length === 0 || purposes.some((p) => typeof p !== 'string' || !actReasonCodes().has(p))) {
      throw new Error(`${file}: entry ${i} (${entry.issuer}): purposes must be a non-empty array of v3-ActReason codes`);
    }
    return { issuer: entry.issuer, keys: createLocalJWKSet(jwks), algorithms, purposes: Object.freeze([...(purposes as string[])]) };
  });
}
