import fs from 'node:fs';
import type { JWK } from 'jose';
import { ODS_SYSTEM, ROLES, SERVER_CLIENT_ID, type OrganizationRef, type Role } from './context';
import { jwkThumbprint } from './keys';
import { actReasonCodes } from './purpose';
import { parseScope } from './scopes';

/**
 * The client registry: who may ask for tokens, with which keys, for which organisation, scopes,
 * purposes and roles. A JSON file operators write by hand, so its shape is fixed and checked
 * strictly: a bad entry stops the server at start-up with a message naming it.
 *
 * Each entry is exactly
 * `{"client_id", "name", "jwks": {"keys": [...]}, "organization": <Reference>, "scopes": [...], "purposes": [...], "roles": [...]}`
 * with `roles` optional.
 */
export interface RegisteredClient {
  readonly clientId: string;
  readonly name: string;
  readonly keys: readonly JWK[];
  /** RFC 7638 thumbprints of `keys`: a token is bound to the key its client authenticated with (see TokenService). */
  readonly keyThumbprints: ReadonlySet<string>;
  readonly organization: OrganizationRef;
  readonly scopes: readonly string[];
  readonly purposes: readonly string[];
  readonly roles: readonly Role[];
}

export class RegistryError extends Error {
  constructor(file: string, where: string, problem: string) {
    super(`${file}: ${where}: ${problem}`);
    this.name = 'RegistryError';
  }
}

const KEYS = new Set(['client_id', 'name', 'jwks', 'organization', 'scopes', 'purposes', 'roles']);
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

/** Checks a parsed registry; throws RegistryError naming the first bad entry and what is wrong. */
export function parseRegistry(json: unknown, file: string): RegisteredClient[] {
  if (!Array.isArray(json)) throw new RegistryError(file, 'top level', 'must be a JSON array of clients');
  const seen = new Set<string>();
  return json.map((entry, i) => {
    const name = entry && typeof entry === 'object' && typeof (entry as { client_id?: unknown }).client_id === 'string' ? ` (client_id "${(entry as { client_id: string }).client_id}")` : '';
    const where = `entry ${i}${name}`;
    const fail = (problem: string): never => {
      throw new RegistryError(file, where, problem);
    };
    if (!entry || typeof entry !== 'object' || Array.isArray(entry)) fail('must be an object');
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) if (!KEYS.has(k)) fail(`unknown property "${k}" (allowed: ${[...KEYS].join(', ')})`);
    if (typeof e.client_id !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(e.client_id)) fail('client_id must be 1-128 of A-Z a-z 0-9 . _ : -');
    const clientId = e.client_id as string;
    if (clientId === SERVER_CLIENT_ID) fail(`client_id "${SERVER_CLIENT_ID}" is the server's own (the writer of its AuditEvents)`);
    if (seen.has(clientId)) fail('client_id is used by an earlier entry');
    seen.add(clientId);
    if (typeof e.name !== 'string' || !e.name.trim()) fail('name must be a non-empty string');
    const jwks = e.jwks as { keys?: unknown } | undefined;
    if (!jwks || typeof jwks !== 'object' || !Array.isArray(jwks.keys) || jwks.keys.length === 0) fail('jwks must be {"keys": [ ...public JWKs ]} with at least one key');
    const kids = new Set<string>();
    const keys = (jwks!.keys as unknown[]).map((k, j) => {
      const at = `jwks.keys[${j}]`;
      if (!k || typeof k !== 'object') fail(`${at} must be a JWK object`);
      const key = k as JWK & Record<string, unknown>;
      if (typeof key.kid !== 'string' || !key.kid) fail(`${at} has no kid`);
      if (kids.has(key.kid!)) fail(`${at}: kid "${key.kid}" is used twice`);
      kids.add(key.kid!);
      if (PRIVATE_MEMBERS.some((m) => m in key)) fail(`${at} (kid "${key.kid}") holds private key material: register only the public key`);
      if (key.kty === 'EC') {
        if (key.crv !== 'P-384' || typeof key.x !== 'string' || typeof key.y !== 'string') fail(`${at}: EC keys must be P-384 with x and y (for ES384)`);
        if (key.alg !== undefined && key.alg !== 'ES384') fail(`${at}: alg must be ES384 for an EC key`);
      } else if (key.kty === 'RSA') {
        if (typeof key.n !== 'string' || typeof key.e !== 'string') fail(`${at}: RSA keys need n and e`);
        if (Buffer.from(key.n as string, 'base64url').length * 8 < 2048) fail(`${at}: RSA keys must be at least 2048 bits`);
        if (key.alg !== undefined && key.alg !== 'RS384') fail(`${at}: alg must be RS384 for an RSA key`);
      } else fail(`${at}: kty must be EC (ES384) or RSA (RS384)`);
      if (key.use !== undefined && key.use !== 'sig') fail(`${at}: use must be "sig"`);
      return key as JWK;
    });
    const organization = parseOrganization(e.organization, fail);
    if (!Array.isArray(e.scopes) || e.scopes.length === 0) fail('scopes must be a non-empty array');
    for (const s of e.scopes as unknown[]) {
      const parsed = typeof s === 'string' ? parseScope(s) : null;
      if (!parsed) fail(`scope ${JSON.stringify(s)} is not a SMART v1 or v2 resource scope for Patient, Consent, AuditEvent or *`);
    }
    if (!Array.isArray(e.purposes) || e.purposes.length === 0) fail('purposes must be a non-empty array of v3-ActReason codes');
    for (const p of e.purposes as unknown[]) if (typeof p !== 'string' || !actReasonCodes().has(p)) fail(`purpose ${JSON.stringify(p)} is not a v3-ActReason code`);
    const roles = e.roles === undefined ? [] : e.roles;
    if (!Array.isArray(roles)) fail(`roles must be an array of ${ROLES.join(', ')}`);
    for (const r of roles as unknown[]) if (!ROLES.includes(r as Role)) fail(`role ${JSON.stringify(r)} is not one of ${ROLES.join(', ')}`);
    return {
      clientId,
      name: e.name as string,
      keys,
      keyThumbprints: new Set(keys.map(jwkThumbprint)),
      organization,
      scopes: e.scopes as string[],
      purposes: e.purposes as string[],
      roles: roles as Role[],
    };
  });
}

function parseOrganization(value: unknown, fail: (problem: string) => never): OrganizationRef {
  if (!value || typeof value !== 'object' || Array.isArray(value)) fail('organization must be a FHIR Reference: {"reference": "Organization/…"} and/or {"identifier": {"system": "' + ODS_SYSTEM + '", "value": "…"}}');
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['reference', 'identifier', 'display', 'type'].includes(k)) fail(`organization has unknown property "${k}"`);
  if (o.reference !== undefined && (typeof o.reference !== 'string' || !/^Organization\/[A-Za-z0-9\-.]{1,64}$/.test(o.reference))) fail('organization.reference must look like "Organization/<id>"');
  let identifier: OrganizationRef['identifier'];
  if (o.identifier !== undefined) {
    const id = o.identifier as Record<string, unknown>;
    if (!id || typeof id !== 'object' || typeof id.value !== 'string' || !id.value) fail('organization.identifier needs a value');
    if (id.system !== undefined && typeof id.system !== 'string') fail('organization.identifier.system must be a string');
    identifier = { system: (id.system as string | undefined) ?? ODS_SYSTEM, value: id.value as string };
  }
  if (!o.reference && !identifier) fail('organization needs a reference or an identifier');
  return { reference: o.reference as string | undefined, identifier, display: typeof o.display === 'string' ? o.display : undefined };
}

/**
 * The registry file, loaded at start-up and reloaded when it changes on disk (an invalid new
 * version is refused and logged; the previous clients stay in force).
 */
export class ClientRegistry {
  private clients: Map<string, RegisteredClient>;

  private constructor(
    readonly file: string,
    clients: RegisteredClient[],
  ) {
    this.clients = new Map(clients.map((c) => [c.clientId, c]));
  }

  static load(file: string): ClientRegistry {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new RegistryError(file, 'file', `cannot be read (${(err as Error).message})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new RegistryError(file, 'file', `is not valid JSON (${(err as Error).message})`);
    }
    return new ClientRegistry(file, parseRegistry(json, file));
  }

  static of(clients: RegisteredClient[], file = '(in memory)'): ClientRegistry {
    return new ClientRegistry(file, clients);
  }

  get(clientId: string): RegisteredClient | undefined {
    return this.clients.get(clientId);
  }

  all(): RegisteredClient[] {
    return [...this.clients.values()];
  }

  /** Re-reads the file; on error keeps the current clients and reports why. */
  reload(): { ok: true; count: number } | { ok: false; error: string } {
    try {
      const next = ClientRegistry.load(this.file);
      this.clients = next.clients;
      return { ok: true, count: this.clients.size };
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  }

  /** Reloads whenever the file changes; returns a function that stops watching. */
  watch(onReload: (result: ReturnType<ClientRegistry['reload']>) => void): () => void {
    const listener = (curr: fs.Stats, prev: fs.Stats) => {
      if (curr.mtimeMs !== prev.mtimeMs) onReload(this.reload());
    };
    fs.watchFile(this.file, { interval: 1000, persistent: false }, listener);
    return () => fs.unwatchFile(this.file, listener);
  }
}
