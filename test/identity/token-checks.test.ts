import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import type { AccessContext } from '../../server/access/context';
import { permit } from '../../server/consent/decision';
import type { AccessPolicy } from '../../server/gate/policy';
import { generateJwkPair } from '../../server/access/keys';
import { clientKeyOf, testSigningKey } from '../support/auth';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
const BASE = 'http://custodian.test/fhir';

type Entry = Record<string, unknown>;
const only = (clientId: string, change: (e: Entry) => Entry | undefined) => (entries: Entry[]) =>
  entries.flatMap((e) => (e.client_id === clientId ? [change(structuredClone(e))].filter((x): x is Entry => x !== undefined) : [e]));

/**
 * A token's signature is checked once per token string; everything that can change between two
 * requests with the same token — the clock, and the client's entry in the registry (present;
 * scopes, roles, organisation, purposes) — is checked on every request.
 */
describe('Identity: a token is re-checked on every request', () => {
  let h: Harness;
  let pid: string;
  const t0 = Date.UTC(2033, 0, 1);
  before(async () => {
    h = await startHarness({
      frozenAt: t0,
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.rs'], purposes: ['TREAT', 'BTG'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
        { clientId: 'leaver', ods: 'GP1', scopes: ['system/Patient.rs'], purposes: ['TREAT'] },
      ],
    });
    pid = (await (await h.as('gp')).post('/Patient', patient({ managingOrganization: { identifier: { system: ODS, value: 'GP1' } } }))).body.id;
  });
  after(() => h.close());

  /** Each test edits the registry; put it back afterwards. */
  let original: Entry[] | undefined;
  beforeEach(() => h.editClients((entries) => ((original = structuredClone(entries)), entries)));
  afterEach(() => h.editClients(() => original!));

  const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

  it('the token of a client removed from the registry stops working at the next request, though it was used (and cached) before', async () => {
    const token = await h.token('leaver');
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200, 'served from the cache');
    h.editClients((entries) => entries.filter((e) => e.client_id !== 'leaver'));
    const res = await h.anonymous.get(`/Patient/${pid}`, bearer(token));
    assert.equal(res.status, 401);
    assert.match(res.headers['www-authenticate'], /error="invalid_token"/);
    assert.match(res.body.issue[0].diagnostics, /no longer registered/);
  });

  /** A fresh token for `clientId`, obtained with the given private key (not the harness's cached one). */
  const tokenWith = (clientId: string, jwk?: import('jose').JWK) => h.token(clientId, { fresh: true, ...(jwk ? { jwk } : {}) });

  it('a key taken out of the registry ends the tokens obtained with it at once; the client\'s other key keeps its own', async () => {
    const second = await generateJwkPair();
    h.editClients(only('leaver', (e) => ({ ...e, jwks: { keys: [...(e.jwks as { keys: unknown[] }).keys, second.publicJwk] } })));
    const withOld = await tokenWith('leaver');
    const withNew = await tokenWith('leaver', second.privateJwk);
    for (const t of [withOld, withNew]) assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(t))).status, 200);
    // The first key is rotated out (say it leaked).
    h.editClients(only('leaver', (e) => ({ ...e, jwks: { keys: [second.publicJwk] } })));
    const res = await h.anonymous.get(`/Patient/${pid}`, bearer(withOld));
    assert.equal(res.status, 401);
    assert.match(res.headers['www-authenticate'], /error="invalid_token"/);
    assert.match(res.body.issue[0].diagnostics, /key leaver obtained this token with is no longer registered/);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(withNew))).status, 200);
  });

  it('a client removed and added again with a new key does not revive the tokens of its old one', async () => {
    const token = await tokenWith('leaver');
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200);
    const entry = structuredClone(original!.find((e) => e.client_id === 'leaver')!);
    h.editClients((entries) => entries.filter((e) => e.client_id !== 'leaver'));
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 401);
    const fresh = await generateJwkPair();
    h.editClients((entries) => [...entries, { ...entry, jwks: { keys: [fresh.publicJwk] } }]);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 401, 'the old token stays dead');
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(await tokenWith('leaver', fresh.privateJwk)))).status, 200);
    // Added again with its old key, the client is the same client again, and so are its tokens.
    h.editClients((entries) => [...entries.filter((e) => e.client_id !== 'leaver'), entry]);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200);
  });

  it('a token signed with our key but naming no client key is refused', async () => {
    const key = await testSigningKey();
    const now = Math.floor(t0 / 1000);
    const claims = { client_id: 'gp', scope: 'system/Patient.rs', purpose_of_use: ['TREAT'] };
    const sign = (extra: Record<string, unknown>) => new SignJWT({ ...claims, ...extra }).setProtectedHeader({ alg: 'ES384', kid: key.kid }).setIssuer(BASE).setAudience(BASE).setSubject('gp').setExpirationTime(now + 300).sign(key.privateKey);
    for (const extra of [{}, { client_key: '' }, { client_key: 42 }, { client_key: clientKeyOf(h.clients.get('leaver')!) }]) {
      const res = await h.anonymous.get(`/Patient/${pid}`, bearer(await sign(extra)));
      assert.equal(res.status, 401, JSON.stringify(extra));
      assert.match(res.body.issue[0].diagnostics, /client key|no longer registered/);
    }
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(await sign({ client_key: clientKeyOf(h.clients.get('gp')!) })))).status, 200);
    // Tokens issued before tokens were bound (before the cut-over the database recorded) carry no
    // key and still work until they expire; one issued since without a key does not.
    const cutover = Math.floor(h.store.cutovers.unboundTokensBefore / 1000);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(await sign({ iat: cutover - 60 })))).status, 200);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(await sign({ iat: cutover + 1 })))).status, 401);
  });

  it('a scope taken away from the client is taken away from its tokens', async () => {
    const token = await h.token('gp');
    assert.equal((await h.anonymous.get('/Consent', bearer(token))).status, 200);
    h.editClients(only('gp', (e) => ({ ...e, scopes: ['system/Patient.cruds'] })));
    const consents = await h.anonymous.get('/Consent', bearer(token));
    assert.equal(consents.status, 403);
    assert.match(consents.headers['www-authenticate'], /insufficient_scope/);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200, 'the scopes it keeps still work');
    h.editClients(only('gp', (e) => ({ ...e, scopes: ['system/Patient.rs', 'system/Consent.rs'] })));
    assert.equal((await h.anonymous.post('/Patient', patient(), bearer(token))).status, 403, 'narrowed from cruds to rs: no create');
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200);
  });

  it('a scope added to the registry is not added to tokens already issued', async () => {
    const token = await h.token('leaver');
    h.editClients(only('leaver', (e) => ({ ...e, scopes: ['system/*.cruds'] })));
    assert.equal((await h.anonymous.get('/Consent', bearer(token))).status, 403);
  });

  it('a role taken away is gone from the client\'s tokens at once', async () => {
    const token = await h.token('auditor', { purpose: 'HOPERAT' });
    assert.equal((await h.anonymous.get('/AuditEvent/$verify', bearer(token))).status, 200);
    h.editClients(only('auditor', (e) => ({ ...e, roles: [] })));
    assert.equal((await h.anonymous.get('/AuditEvent/$verify', bearer(token))).status, 403);
  });

  it('an organisation change reaches the client\'s tokens at once (it is no longer the custodian)', async () => {
    const token = await h.token('gp');
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200);
    h.editClients(only('gp', (e) => ({ ...e, organization: { identifier: { system: ODS, value: 'ELSEWHERE' } } })));
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 403);
  });

  it('a purpose taken away refuses the tokens issued for it', async () => {
    const btg = await h.token('gp', { purpose: 'BTG' });
    const treat = await h.token('gp', { purpose: 'TREAT' });
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(btg))).status, 200);
    h.editClients(only('gp', (e) => ({ ...e, purposes: ['TREAT'] })));
    const res = await h.anonymous.get(`/Patient/${pid}`, bearer(btg));
    assert.equal(res.status, 401);
    assert.match(res.body.issue[0].diagnostics, /BTG is no longer registered/);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(treat))).status, 200);
  });

  it('a cached token is refused once it expires, and stays refused', async () => {
    const token = await h.token('leaver');
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 200);
    h.clock.now = t0 + 3600 * 1000;
    try {
      for (let i = 0; i < 2; i++) assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(token))).status, 401);
    } finally {
      h.clock.now = t0;
    }
  });

  it('a token refused for its audience is refused again when replayed (a refusal is never cached as a success)', async () => {
    const key = await testSigningKey();
    const now = Math.floor(t0 / 1000);
    const foreign = await new SignJWT({ client_id: 'gp', scope: 'system/Patient.rs', purpose_of_use: ['TREAT'], client_key: clientKeyOf(h.clients.get('gp')!) })
      .setProtectedHeader({ alg: 'ES384', kid: key.kid })
      .setIssuer('https://evil.example')
      .setAudience('https://evil.example')
      .setSubject('gp')
      .setExpirationTime(now + 300)
      .sign(key.privateKey);
    const attempts: Record<string, string>[] = [{}, { 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https' }, {}];
    for (const headers of attempts) {
      assert.equal((await h.anonymous.get(`/Patient/${pid}`, { ...bearer(foreign), ...headers })).status, 401);
    }
    const ours = await new SignJWT({ client_id: 'gp', scope: 'system/Patient.rs', purpose_of_use: ['TREAT'], client_key: clientKeyOf(h.clients.get('gp')!) })
      .setProtectedHeader({ alg: 'ES384', kid: key.kid })
      .setIssuer(BASE)
      .setAudience(BASE)
      .setSubject('gp')
      .setExpirationTime(now + 300)
      .sign(key.privateKey);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, bearer(ours))).status, 200);
    assert.equal((await h.anonymous.get(`/Patient/${pid}`, { ...bearer(ours), 'X-Forwarded-Host': 'evil.example' })).status, 200, 'the audience is the server\'s, not the request\'s');
  });
});

describe('Identity: handlers see a frozen access context', () => {
  let h: Harness;
  const seen: AccessContext[] = [];
  /** Records the context the gate is handed by the route handlers, and permits. */
  const spy: AccessPolicy = {
    allowsInteraction: (ctx) => (seen.push(ctx), permit('open-access', 'spy')),
    canRead: async (ctx, versions) => (seen.push(ctx), versions.map(() => permit('open-access', 'spy'))),
    canWrite: async (ctx) => (seen.push(ctx), permit('open-access', 'spy')),
  };
  before(async () => {
    h = await startHarness({ policy: spy, clients: [{ clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds'], purposes: ['TREAT'], roles: ['auditor'] }] });
  });
  after(() => h.close());

  it('the context a read, a search and a write hand to the gate is deeply frozen', async () => {
    const gp = await h.as('gp');
    const id = (await gp.post('/Patient', patient())).body.id;
    await gp.get(`/Patient/${id}`);
    await gp.get('/Patient');
    const mine = seen.filter((c) => c.clientId === 'gp');
    assert.ok(mine.length >= 3);
    for (const ctx of mine) {
      assert.ok(Object.isFrozen(ctx) && Object.isFrozen(ctx.scopes) && Object.isFrozen(ctx.roles) && Object.isFrozen(ctx.organization) && Object.isFrozen(ctx.organization!.identifier));
      assert.throws(() => ((ctx as { clientId: string }).clientId = 'test-admin'));
      assert.throws(() => (ctx.scopes as string[]).push('system/*.cruds'));
      assert.throws(() => (ctx.roles as string[]).push('national-service'));
      assert.throws(() => ((ctx.organization!.identifier as { value: string }).value = 'TADMIN'));
      assert.throws(() => ((ctx as { purposeOfUse: string }).purposeOfUse = 'BTG'));
    }
    assert.deepEqual([...mine[0].scopes], ['system/Patient.cruds']);
    assert.equal(mine[0].organization!.identifier!.value, 'GP1');
  });

  it('a registry change reaches the context of the next request made with the same token', async () => {
    const token = await h.token('gp');
    h.editClients(only('gp', (e) => ({ ...e, roles: [] })));
    seen.length = 0;
    await h.anonymous.get('/Patient', bearer(token));
    const ctx = seen.find((c) => c.clientId === 'gp')!;
    assert.deepEqual([...ctx.roles], [], 'the new registry entry, not the frozen old one');
  });
  const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
});
