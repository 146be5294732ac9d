import assert from 'node:assert/strict';
import { exportJWK, generateKeyPair, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose';
import { freezeContext } from '../../server/access/context';
import { clientKeyOf, testSigningKey } from '../support/auth';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const BASE = 'http://custodian.test/fhir';

describe('Identity: bearer tokens on every FHIR request', () => {
  let h: Harness;
  let secretId: string;
  const t0 = Date.UTC(2032, 0, 1);
  before(async () => {
    h = await startHarness({ frozenAt: t0, clients: [{ clientId: 'reader', ods: 'TADMIN', scopes: ['system/Patient.read'], purposes: ['TREAT'] }] });
    secretId = (await h.api.post('/Patient', patient({ name: [{ family: 'Secretsworth' }] }))).body.id;
  });
  after(() => h.close());

  /** A token signed by the server's own key, with the given claims. */
  async function forged(claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
    const key = await testSigningKey();
    const now = Math.floor(h.clock.now / 1000);
    return new SignJWT({ iss: BASE, aud: BASE, sub: 'test-admin', client_id: 'test-admin', scope: 'system/*.cruds', purpose_of_use: ['TREAT'], client_key: clientKeyOf(h.clients.get('test-admin')!), iat: now, exp: now + 300, jti: 'forged', ...claims })
      .setProtectedHeader({ alg: 'ES384', kid: key.kid, ...header })
      .sign(key.privateKey);
  }

  /** The request was refused with a 401 that reveals nothing of the record. */
  async function refused(headers: Record<string, string>, error?: string): Promise<void> {
    for (const path of [`/Patient/${secretId}`, '/Patient?name=Secrets', '/_history']) {
      const res = await h.anonymous.request('get', path, { headers });
      assert.equal(res.status, 401, `${path}: ${res.text}`);
      assert.equal(res.body.resourceType, 'OperationOutcome');
      assert.equal(res.body.issue[0].code, 'login');
      assert.doesNotMatch(res.text, /Secretsworth|entry/);
      assert.match(res.headers['www-authenticate'], /^Bearer realm="http:\/\/custodian\.test\/fhir"/);
      if (error) assert.match(res.headers['www-authenticate'], new RegExp(`error="${error}"`));
    }
  }

  it('answers 401 without a token, for reads, searches and writes alike', async () => {
    await refused({});
    const write = await h.anonymous.post('/Patient', patient());
    assert.equal(write.status, 401);
    assert.equal((await h.api.get('/Patient?_summary=count')).body.total, 1, 'nothing was stored');
  });

  it('leaves /metadata and SMART discovery public', async () => {
    assert.equal((await h.anonymous.get('/metadata')).status, 200);
    assert.equal((await h.anonymous.get('/.well-known/smart-configuration')).status, 200);
  });

  it('answers 401 for a non-Bearer or malformed Authorization header', async () => {
    await refused({ Authorization: 'Basic dXNlcjpwYXNz' }, 'invalid_request');
    await refused({ Authorization: 'Bearer' }, 'invalid_request');
    await refused({ Authorization: 'Bearer not-a-jwt' }, 'invalid_token');
  });

  it('answers 401 for an expired token, and for one not valid yet', async () => {
    await refused({ Authorization: `Bearer ${await forged({ exp: Math.floor(t0 / 1000) - 1 })}` }, 'invalid_token');
    await refused({ Authorization: `Bearer ${await forged({ nbf: Math.floor(t0 / 1000) + 600 })}` }, 'invalid_token');
  });

  it('answers 401 once a token it accepted expires (the server clock moves on)', async () => {
    const token = await h.token('reader');
    assert.equal((await h.anonymous.get(`/Patient/${secretId}`, { Authorization: `Bearer ${token}` })).status, 200);
    h.clock.now = t0 + 3601 * 1000;
    try {
      await refused({ Authorization: `Bearer ${token}` }, 'invalid_token');
    } finally {
      h.clock.now = t0;
    }
  });

  it('answers 401 for a token for another audience or issuer', async () => {
    await refused({ Authorization: `Bearer ${await forged({ aud: 'http://other.example/fhir' })}` }, 'invalid_token');
    await refused({ Authorization: `Bearer ${await forged({ iss: 'http://other.example/fhir' })}` }, 'invalid_token');
  });

  it('answers 401 for a token signed by another key, unsigned (alg none), or HS256 keyed with our public key', async () => {
    const { privateKey } = await generateKeyPair('ES384');
    const now = Math.floor(t0 / 1000);
    const other = await new SignJWT({ iss: BASE, aud: BASE, sub: 'test-admin', client_id: 'test-admin', scope: 'system/*.cruds', purpose_of_use: ['TREAT'], exp: now + 60 })
      .setProtectedHeader({ alg: 'ES384', kid: (await testSigningKey()).kid })
      .sign(privateKey);
    await refused({ Authorization: `Bearer ${other}` }, 'invalid_token');
    const none = new UnsecuredJWT({ iss: BASE, aud: BASE, sub: 'test-admin', client_id: 'test-admin', scope: 'system/*.cruds', purpose_of_use: ['TREAT'] }).setExpirationTime(now + 60).encode();
    await refused({ Authorization: `Bearer ${none}` }, 'invalid_token');
    const publicJwk = await exportJWK((await testSigningKey()).publicKey);
    const hmac = await new SignJWT({ iss: BASE, aud: BASE, sub: 'test-admin', client_id: 'test-admin', scope: 'system/*.cruds', purpose_of_use: ['TREAT'], exp: now + 60 })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(JSON.stringify(publicJwk)));
    await refused({ Authorization: `Bearer ${hmac}` }, 'invalid_token');
  });

  it('answers 401 for a token whose client is not registered, or that has no purpose', async () => {
    // The same token with every claim right is accepted: each refusal below is for the one claim changed.
    assert.equal((await h.anonymous.get(`/Patient/${secretId}`, { Authorization: `Bearer ${await forged({ jti: 'forged-ok' })}` })).status, 200);
    const ghost = await forged({ sub: 'ghost', client_id: 'ghost' });
    await refused({ Authorization: `Bearer ${ghost}` }, 'invalid_token');
    assert.match((await h.anonymous.get(`/Patient/${secretId}`, { Authorization: `Bearer ${ghost}` })).body.issue[0].diagnostics, /client ghost is no longer registered/);
    await refused({ Authorization: `Bearer ${await forged({ purpose_of_use: undefined })}` }, 'invalid_token');
  });

  it('answers 403 with insufficient_scope when the scopes do not cover the interaction', async () => {
    const reader = await h.as('reader');
    assert.equal((await reader.get(`/Patient/${secretId}`)).status, 200);
    const write = await reader.post('/Patient', patient());
    assert.equal(write.status, 403);
    assert.equal(write.body.issue[0].code, 'forbidden');
    assert.match(write.headers['www-authenticate'], /error="insufficient_scope"/);
    const consents = await reader.get('/Consent');
    assert.equal(consents.status, 403);
    assert.doesNotMatch(consents.text, /entry/);
    assert.equal((await reader.delete(`/Patient/${secretId}`)).status, 403);
    assert.equal((await reader.get(`/Patient/${secretId}`)).status, 200, 'nothing was deleted');
  });

  it('hands every handler a frozen access context', () => {
    const ctx = freezeContext({ requestId: 'r', clientId: 'c', roles: ['auditor'], scopes: ['system/*.rs'], purposeOfUse: 'TREAT', organization: { identifier: { value: 'X' } } });
    assert.throws(() => ((ctx as { clientId: string }).clientId = 'other'));
    assert.throws(() => (ctx.scopes as string[]).push('system/*.cruds'));
    assert.throws(() => ((ctx.organization!.identifier as { value: string }).value = 'Y'));
  });
});
