import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, type KeyLike } from 'jose';

/** The server's token-signing key: a private ES384 JWK, and its public half for the JWKS. */
export interface SigningKey {
  readonly kid: string;
  readonly alg: 'ES384' | 'RS384';
  readonly privateKey: KeyLike | Uint8Array;
  readonly publicKey: KeyLike | Uint8Array;
  readonly publicJwk: JWK;
}

/**
 * The RFC 7638 thumbprint (SHA-256, base64url) of a public EC or RSA JWK: its required members in
 * lexicographic order, no whitespace. Synchronous, for the per-request token check.
 */
export function jwkThumbprint(jwk: JWK): string {
  const members = jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : jwk.kty === 'RSA' ? { e: jwk.e, kty: jwk.kty, n: jwk.n } : undefined;
  if (!members) throw new Error(`no thumbprint for a JWK of type ${String(jwk.kty)}`);
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

/** A fresh ES384 key pair as JWKs, with an RFC 7638 thumbprint as kid. */
export async function generateJwkPair(): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair('ES384', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return {
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg: 'ES384', use: 'sig' },
    publicJwk: { ...publicJwk, kid, alg: 'ES384', use: 'sig' },
  };
}

/**
 * Loads the signing key from `file` (a private JWK, EC P-384 or RSA), or generates an ES384
 * key and writes it there (mode 0600) on first start, so tokens survive restarts.
 */
export async function loadOrCreateSigningKey(file: string): Promise<{ key: SigningKey; created: boolean }> {
  let created = false;
  if (!fs.existsSync(file)) {
    const { privateJwk } = await generateJwkPair();
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, JSON.stringify(privateJwk, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
    created = true;
  }
  const jwk = JSON.parse(fs.readFileSync(file, 'utf8')) as JWK;
  return { key: await signingKeyFrom(jwk), created };
}

export async function signingKeyFrom(jwk: JWK): Promise<SigningKey> {
  if (!jwk.d) throw new Error('the signing key must be a private JWK');
  const alg = jwk.kty === 'RSA' ? 'RS384' : 'ES384';
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
  const kid = jwk.kid ?? (await calculateJwkThumbprint(pub));
  const publicJwk: JWK = { ...pub, kid, alg, use: 'sig' };
  return { kid, alg, privateKey: await importJWK({ ...jwk, alg }, alg), publicKey: await importJWK(publicJwk, alg), publicJwk };
}
