import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { JWK } from 'jose';
import { ClientRegistry } from '../../server/access/registry';
import type { TrustedIssuer } from '../../server/access/tokens';
import { buildApp, type App } from '../../server/app';
import { loadConfig, type Config } from '../../server/config';
import type { AccessPolicy } from '../../server/gate/policy';
import { createLogger } from '../../server/log';
import { Store } from '../../server/store/store';
import { Api } from './api';
import { clientAssertion, DEFAULT_CLIENTS, makeClients, testSigningKey, type ClientSpec, type TestClient } from './auth';
import { freshDatabase, type TestDatabase } from './db';

export interface Harness {
  /** The API as the default client (test-admin: every scope, its own organisation). */
  readonly api: Api;
  /** The API with no token at all. */
  readonly anonymous: Api;
  /** The API as another registered client, through the real token flow. */
  as(clientId: string, options?: TokenOptions): Promise<Api>;
  /** An access token for a client, through the real token flow (POST /auth/token). */
  token(clientId: string, options?: TokenOptions): Promise<string>;
  readonly clients: Map<string, TestClient>;
  /** The client registry, loaded from a file as the server loads it. */
  readonly registry: ClientRegistry;
  /** Rewrites the registry file (its JSON entries, changed by `change`) and reloads it, as an operator's edit would. */
  editClients(change: (entries: Record<string, unknown>[]) => Record<string, unknown>[]): void;
  readonly app: App;
  readonly store: Store;
  readonly config: Config;
  readonly db: TestDatabase;
  /** The clock the app runs on; tests move it instead of sleeping. */
  readonly clock: { now: number; auto: boolean };
  close(): Promise<void>;
}

export interface TokenOptions {
  scope?: string;
  purpose?: string;
  /** Sign the client assertion with this private key instead of the client's first one. */
  jwk?: JWK;
  /** A new token, not the one cached for the same client, scope, purpose and key. */
  fresh?: boolean;
}

export interface HarnessOptions {
  env?: Record<string, string>;
  /** Registered clients besides test-admin. */
  clients?: ClientSpec[];
  /** Trusted external token issuers. */
  trusted?: TrustedIssuer[];
  policy?: AccessPolicy;
  /** A frozen clock (ms); default: real time. */
  frozenAt?: number;
  /** How long the server waits for a database lock (fault tests). */
  lockTimeoutMs?: number;
  /** The listen address the app is told (names the server in tokens when CUSTODIAN_BASE_URL is unset). */
  listenUrl?: string;
  /** A database of the test's own (fault tests), instead of a fresh one; closing the harness drops it. */
  database?: TestDatabase;
  /** SQLite: the audit worker moves its journal only when the trail is read (see AuditThreadOptions.holdJournal). */
  holdAuditJournal?: boolean;
}

/** A fresh database and app, driven in-process through the real HTTP stack. */
export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const db = options.database ?? (await freshDatabase({ lockTimeoutMs: options.lockTimeoutMs }));
  const config = loadConfig({ CUSTODIAN_BASE_URL: 'http://custodian.test/fhir', LOG_LEVEL: 'silent', CUSTODIAN_TOKEN_LIFETIME: '3600', ...options.env }, process.cwd());
  const clock = { now: options.frozenAt ?? Date.now(), auto: options.frozenAt === undefined };
  const now = () => (clock.auto ? Date.now() : clock.now);
  const store = await Store.open(db.config, { now, localBase: config.baseUrl, benchAuditFloor: config.benchAuditFloor, holdAuditJournal: options.holdAuditJournal });
  const { clients, json } = await makeClients([...DEFAULT_CLIENTS, ...(options.clients ?? [])]);
  const registryDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-clients-'));
  const registryFile = path.join(registryDir, 'clients.json');
  fs.writeFileSync(registryFile, JSON.stringify(json));
  const registry = ClientRegistry.load(registryFile);
  const app = buildApp({
    config,
    store,
    now,
    logger: createLogger('silent'),
    policy: options.policy,
    access: { registry, key: await testSigningKey(), trusted: options.trusted, listenUrl: options.listenUrl },
  });
  const anonymous = new Api(app.express);
  const tokens = new Map<string, string>();
  const token = async (clientId: string, t: TokenOptions = {}): Promise<string> => {
    const key = `${clientId}|${t.scope ?? ''}|${t.purpose ?? ''}|${t.jwk?.kid ?? ''}`;
    const cached = t.fresh ? undefined : tokens.get(key);
    if (cached) return cached;
    const client = clients.get(clientId);
    if (!client) throw new Error(`no test client ${clientId}`);
    const tokenUrl = app.audience.tokenEndpoint;
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(client, tokenUrl, now(), t.jwk ? { jwk: t.jwk } : {}),
      scope: t.scope ?? (client.entry.scopes as string[]).join(' '),
    });
    if (t.purpose) form.set('purpose_of_use', t.purpose);
    const res = await anonymous.request('post', '/auth/token', { body: form.toString(), raw: true, contentType: 'application/x-www-form-urlencoded' });
    if (res.status !== 200) throw new Error(`token for ${clientId} failed: ${res.status} ${res.text}`);
    const accessToken = JSON.parse(res.text).access_token as string;
    tokens.set(key, accessToken);
    return accessToken;
  };
  const api = new Api(app.express, await token('test-admin'));
  return {
    api,
    anonymous,
    token,
    clients,
    registry,
    editClients(change) {
      const entries = change(JSON.parse(fs.readFileSync(registryFile, 'utf8')) as Record<string, unknown>[]);
      fs.writeFileSync(registryFile, JSON.stringify(entries));
      const result = registry.reload();
      if (!result.ok) throw new Error(`the edited registry was refused: ${result.error}`);
    },
    async as(clientId: string, t?: TokenOptions) {
      return new Api(app.express, await token(clientId, t));
    },
    app,
    store,
    config,
    db,
    clock,
    async close() {
      await store.close();
      await db.drop();
      fs.rmSync(registryDir, { recursive: true, force: true });
    },
  };
}
