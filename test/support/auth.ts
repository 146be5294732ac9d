import { randomUUID } from 'node:crypto';
import { SignJWT, importJWK, type JWK } from 'jose';
import { generateJwkPair, jwkThumbprint, signingKeyFrom, type SigningKey } from '../../server/access/keys';
import { parseRegistry, type RegisteredClient } from '../../server/access/registry';
import { ODS_SYSTEM } from '../../server/access/context';

/** A registered test client with its private key. */
export interface TestClient {
  readonly clientId: string;
  readonly privateJwk: JWK;
  readonly entry: Record<string, unknown>;
}

export interface ClientSpec {
  clientId: string;
  ods?: string;
  reference?: string;
  scopes?: string[];
  purposes?: string[];
  roles?: string[];
}

const keyCache: { pair?: Promise<{ privateJwk: JWK; publicJwk: JWK }>[] } = {};

/** Key pairs are slow-ish to make; tests reuse a small pool (each client still gets its own). */
async function keyPair(i: number): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  keyCache.pair ??= [];
  keyCache.pair[i] ??= generateJwkPair();
  return keyCache.pair[i];
}

export const DEFAULT_CLIENTS: ClientSpec[] = [
  { clientId: 'test-admin', ods: 'TADMIN', scopes: ['system/*.cruds'], purposes: ['TREAT', 'ETREAT', 'BTG', 'HOPERAT', 'HRESCH', 'PUBHLTH', 'HPAYMT', 'PATRQT'], roles: ['auditor', 'national-service', 'audit-source'] },
];

export async function makeClients(specs: ClientSpec[]): Promise<{ clients: Map<string, TestClient>; registry: RegisteredClient[]; json: unknown[] }> {
  const clients = new Map<string, TestClient>();
  const json: Record<string, unknown>[] = [];
  for (let i = 0; i < specs.length; i++) {
    const s = specs[i];
    const { privateJwk, publicJwk } = await keyPair(i);
    const organization: Record<string, unknown> = {};
    if (s.ods) organization.identifier = { system: ODS_SYSTEM, value: s.ods };
    if (s.reference) organization.reference = s.reference;
    if (!s.ods && !s.reference) organization.identifier = { system: ODS_SYSTEM, value: `ORG-${s.clientId}` };
    const entry = {
      client_id: s.clientId,
      name: `Test client ${s.clientId}`,
      jwks: { keys: [publicJwk] },
      organization,
      scopes: s.scopes ?? ['system/*.cruds'],
      purposes: s.purposes ?? ['TREAT'],
      ...(s.roles ? { roles: s.roles } : {}),
    };
    json.push(entry);
    clients.set(s.clientId, { clientId: s.clientId, privateJwk, entry });
  }
  return { clients, registry: parseRegistry(json, '(test)'), json };
}

/** The `client_key` claim of a token the server issues to this client (the thumbprint of its registered key), for tests that sign tokens themselves. */
export function clientKeyOf(client: TestClient): string {
  return jwkThumbprint((client.entry.jwks as { keys: JWK[] }).keys[0]);
}

let serverKey: Promise<SigningKey> | undefined;
export function testSigningKey(): Promise<SigningKey> {
  serverKey ??= generateJwkPair().then(({ privateJwk }) => signingKeyFrom(privateJwk));
  return serverKey;
}

/** A client assertion (RFC 7523) as SMART Backend Services expects; `overrides` bend it for failure tests. */
export async function clientAssertion(
  client: TestClient,
  tokenUrl: string,
  nowMs: number,
  overrides: { claims?: Record<string, unknown>; header?: Record<string, unknown>; lifetime?: number; jwk?: JWK } = {},
): Promise<string> {
  const jwk = overrides.jwk ?? client.privateJwk;
  const alg = (jwk.alg as string) ?? 'ES384';
  const key = await importJWK(jwk, alg);
  const now = Math.floor(nowMs / 1000);
  const claims = { iss: client.clientId, sub: client.clientId, aud: tokenUrl, iat: now, exp: now + (overrides.lifetime ?? 240), jti: randomUUID(), ...overrides.claims };
  return new SignJWT(claims).setProtectedHeader({ alg, kid: jwk.kid, typ: 'JWT', ...overrides.header }).sign(key);
}
