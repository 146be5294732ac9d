import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { importJWK, SignJWT, type JWK } from 'jose';

import { clientKey, parseArgs } from './cli';
/**
 * `npm run token -- --client <id> [--scope "…"] [--purpose CODE] [--base URL] [--key FILE]`
 *
 * Performs the SMART Backend Services flow against a running server: discovers the token
 * endpoint (/.well-known/smart-configuration), signs a client assertion with the client's
 * private key (default `<data dir>/keys/<id>.private.jwk.json`), POSTs it, and prints the access
 * token alone on stdout, so `curl -H "Authorization: Bearer $(npm run -s token -- --client demo-gp)"` works.
 *
 * Without `--scope` it asks for every scope the client is registered for; without `--purpose` it
 * asks for no purpose, and the server applies its default (TREAT when the client is registered
 * for it, else the client's first registered purpose).
 */
export interface TokenRequest {
  readonly base: string;
  readonly clientId: string;
  readonly privateJwk: JWK;
  readonly scope: string;
  /** A v3-ActReason code; omitted, the server's default for the client applies. */
  readonly purpose?: string;
}

export async function fetchToken(req: TokenRequest): Promise<{ access_token: string; scope: string; expires_in: number }> {
  const discovery = await fetch(`${req.base}/.well-known/smart-configuration`);
  if (!discovery.ok) throw new Error(`discovery failed: ${discovery.status} ${await discovery.text()}`);
  const { token_endpoint: tokenEndpoint } = (await discovery.json()) as { token_endpoint: string };
  const alg = req.privateJwk.alg ?? (req.privateJwk.kty === 'RSA' ? 'RS384' : 'ES384');
  const key = await importJWK(req.privateJwk, alg);
  const now = Math.floor(Date.now() / 1000);
  const assertion = await new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg, kid: req.privateJwk.kid, typ: 'JWT' })
    .setIssuer(req.clientId)
    .setSubject(req.clientId)
    .setAudience(tokenEndpoint)
    .setIssuedAt(now)
    .setExpirationTime(now + 240)
    .sign(key);
  const form = new URLSearchParams({
    grant_type: 'client_credentials',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
    scope: req.scope,
  });
  if (req.purpose) form.set('purpose_of_use', req.purpose);
  const res = await fetch(tokenEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  const body = (await res.json()) as { access_token: string; scope: string; expires_in: number; error?: string; error_description?: string };
  if (!res.ok) throw new Error(`token request refused: ${res.status} ${body.error}: ${body.error_description}`);
  return body;
}


async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const clientId = a.client;
  if (!clientId) throw new Error('usage: npm run token -- --client <id> [--scope "system/Patient.rs"] [--purpose CODE] [--base http://127.0.0.1:8080] [--key file]');
  const { dataDir, privateJwk } = clientKey(a, clientId);
  let scope = a.scope;
  if (!scope) {
    // default: everything the client is registered for
    const clientsFile = process.env.CUSTODIAN_CLIENTS ?? path.join(dataDir, 'clients.json');
    const entry = (JSON.parse(fs.readFileSync(clientsFile, 'utf8')) as { client_id: string; scopes: string[] }[]).find((c) => c.client_id === clientId);
    if (!entry) throw new Error(`${clientId} is not in ${clientsFile}; pass --scope`);
    scope = entry.scopes.join(' ');
  }
  const base = (a.base ?? process.env.CUSTODIAN_BASE_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`).replace(/\/+$/, '');
  const token = await fetchToken({ base, clientId, privateJwk, scope, purpose: a.purpose });
  process.stdout.write(token.access_token + '\n');
  process.stderr.write(`granted: ${token.scope} (expires in ${token.expires_in} s)\n`);
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`token: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
