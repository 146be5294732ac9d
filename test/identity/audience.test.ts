import assert from 'node:assert/strict';
import { createLocalJWKSet, decodeJwt, exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';
import { audienceOf, listenBaseUrl } from '../../server/access/audience';
import { ConfigError, loadConfig } from '../../server/config';
import { clientAssertion, clientKeyOf, testSigningKey, type TestClient } from '../support/auth';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** What `npm start` listens at: without CUSTODIAN_BASE_URL, the server's name in tokens. */
const LISTEN = 'http://127.0.0.1:8080';
const IDP = 'https://idp.example';
/** Headers a client may send to make the server believe it is someone else. */
const SPOOF = { 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https', Host: 'evil.example' };

describe('Identity: the token audience never comes from the request', () => {
  let h: Harness;
  let gp: TestClient;
  let idpKey: KeyLike;
  let secretId: string;
  before(async () => {
    const pair = await generateKeyPair('ES256');
    idpKey = pair.privateKey;
    h = await startHarness({
      env: { CUSTODIAN_BASE_URL: '' },
      listenUrl: LISTEN,
      clients: [{ clientId: 'gp', ods: 'TADMIN', scopes: ['system/Patient.rs'], purposes: ['TREAT'] }],
      trusted: [{ issuer: IDP, keys: createLocalJWKSet({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'idp', alg: 'ES256' }] }), algorithms: ['ES256'], purposes: ['TREAT'] }],
    });
    gp = h.clients.get('gp')!;
    secretId = (await h.api.post('/Patient', patient({ name: [{ family: 'Audienceworth' }] }))).body.id;
  });
  after(() => h.close());

  async function askToken(assertion: string, headers: Record<string, string> = {}) {
    const body = new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, scope: 'system/Patient.rs' }).toString();
    const res = await h.anonymous.request('post', '/auth/token', { body, raw: true, contentType: 'application/x-www-form-urlencoded', headers });
    return { status: res.status, body: JSON.parse(res.text) as Record<string, string> };
  }
  /** A token signed with the server's own key, for any audience. */
  async function ownKeyToken(aud: string, iss = aud): Promise<string> {
    const key = await testSigningKey();
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ client_id: 'gp', scope: 'system/Patient.rs', purpose_of_use: ['TREAT'], client_key: clientKeyOf(gp) })
      .setProtectedHeader({ alg: 'ES384', kid: key.kid })
      .setIssuer(iss)
      .setAudience(aud)
      .setSubject('gp')
      .setJti(`t-${aud}-${Math.random()}`)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(key.privateKey);
  }
  const readWith = (token: string, headers: Record<string, string> = {}) => h.anonymous.get(`/Patient/${secretId}`, { Authorization: `Bearer ${token}`, ...headers });

  it('without CUSTODIAN_BASE_URL, discovery names the listen address, whatever Host and X-Forwarded-* say', async () => {
    const plain = await h.anonymous.get('/.well-known/smart-configuration');
    const spoofed = await h.anonymous.get('/.well-known/smart-configuration', SPOOF);
    assert.equal(JSON.parse(plain.text).token_endpoint, `${LISTEN}/auth/token`);
    assert.equal(JSON.parse(plain.text).issuer, LISTEN);
    assert.equal(spoofed.text, plain.text, 'the same document for every caller, so a shared cache may keep it');
    assert.match(plain.headers['cache-control'], /public/);
  });

  it('the CapabilityStatement names the same token endpoint, whatever the forwarded headers', async () => {
    const cs = (await h.anonymous.get('/metadata', SPOOF)).body;
    const oauth = cs.rest[0].security.extension.find((e: { url: string }) => e.url.endsWith('oauth-uris'));
    assert.deepEqual(oauth.extension, [{ url: 'token', valueUri: `${LISTEN}/auth/token` }]);
  });

  it('an assertion addressed to a forwarded host is refused with invalid_client, and no token is issued', async () => {
    const res = await askToken(await clientAssertion(gp, 'https://evil.example/auth/token', Date.now()), SPOOF);
    assert.equal(res.status, 401);
    assert.equal(res.body.error, 'invalid_client');
    assert.equal(res.body.access_token, undefined);
  });

  it('an assertion addressed to the listen address is accepted from any Host, and the token names the listen address', async () => {
    const res = await askToken(await clientAssertion(gp, `${LISTEN}/auth/token`, Date.now()), SPOOF);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const claims = decodeJwt(res.body.access_token);
    assert.equal(claims.iss, LISTEN);
    assert.equal(claims.aud, LISTEN);
    assert.equal((await readWith(res.body.access_token, SPOOF)).status, 200);
  });

  it('a token with a foreign audience is refused, even when the request\'s forwarded headers name that audience', async () => {
    for (const base of ['https://evil.example', 'http://evil.example']) {
      const token = await ownKeyToken(base);
      for (let i = 0; i < 2; i++) {
        const res = await readWith(token, SPOOF);
        assert.equal(res.status, 401, `${base}, attempt ${i + 1}: ${res.text}`);
        assert.match(res.headers['www-authenticate'], /error="invalid_token"/);
        assert.match(res.headers['www-authenticate'], new RegExp(`realm="${LISTEN}"`), 'the realm is the server\'s own name, not the forwarded host');
        assert.doesNotMatch(res.text, /Audienceworth/);
      }
    }
    assert.equal((await readWith(await ownKeyToken(LISTEN, 'https://evil.example'), SPOOF)).status, 401, 'nor one for us that another issuer name signed');
  });

  it('a trusted issuer\'s token minted for another resource server is refused, whatever the forwarded headers', async () => {
    const now = Math.floor(Date.now() / 1000);
    const mint = (aud: string) => new SignJWT({ client_id: 'app', scope: 'system/Patient.rs' }).setProtectedHeader({ alg: 'ES256', kid: 'idp' }).setIssuer(IDP).setAudience(aud).setExpirationTime(now + 300).sign(idpKey);
    assert.equal((await readWith(await mint('https://other.example'), { ...SPOOF, 'X-Forwarded-Host': 'other.example', Host: 'other.example' })).status, 401);
    const ours = await mint(LISTEN);
    const res = await readWith(ours, SPOOF);
    assert.notEqual(res.status, 401, 'one minted for us authenticates');
  });

  it('links still follow the forwarded headers (they are not a security boundary), while the token check does not', async () => {
    const token = (await askToken(await clientAssertion(gp, `${LISTEN}/auth/token`, Date.now()))).body.access_token;
    const res = await h.anonymous.get('/Patient?_count=1', { Authorization: `Bearer ${token}`, 'X-Forwarded-Host': 'proxy.example', 'X-Forwarded-Proto': 'https' });
    assert.equal(res.status, 200);
    assert.match(res.body.link[0].url, /^https:\/\/proxy\.example\/Patient/);
  });
});

describe('Identity: extra public base URLs (CUSTODIAN_EXTRA_BASE_URLS)', () => {
  let h: Harness;
  let gp: TestClient;
  before(async () => {
    h = await startHarness({
      env: { CUSTODIAN_BASE_URL: 'https://fhir.example/r4', CUSTODIAN_EXTRA_BASE_URLS: 'https://internal.example/fhir, http://10.0.0.5:8080' },
      clients: [{ clientId: 'gp', ods: 'TADMIN', scopes: ['system/Patient.rs'], purposes: ['TREAT'] }],
    });
    gp = h.clients.get('gp')!;
  });
  after(() => h.close());

  async function askToken(aud: string) {
    const body = new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: await clientAssertion(gp, aud, Date.now()), scope: 'system/Patient.rs' }).toString();
    const res = await h.anonymous.request('post', '/auth/token', { body, raw: true, contentType: 'application/x-www-form-urlencoded' });
    return { status: res.status, body: JSON.parse(res.text) as Record<string, string> };
  }

  it('accepts assertions addressed to any listed base\'s token endpoint; tokens always name the configured base', async () => {
    for (const aud of ['https://fhir.example/r4/auth/token', 'https://internal.example/fhir/auth/token', 'http://10.0.0.5:8080/auth/token']) {
      const res = await askToken(aud);
      assert.equal(res.status, 200, `${aud}: ${JSON.stringify(res.body)}`);
      assert.equal(decodeJwt(res.body.access_token).aud, 'https://fhir.example/r4');
    }
    assert.equal((await askToken('https://elsewhere.example/auth/token')).status, 401);
    assert.equal(JSON.parse((await h.anonymous.get('/.well-known/smart-configuration')).text).token_endpoint, 'https://fhir.example/r4/auth/token', 'discovery names the configured base only');
  });

  it('accepts access tokens addressed to a listed base, and no other', async () => {
    const key = await testSigningKey();
    const now = Math.floor(Date.now() / 1000);
    const token = (aud: string) => new SignJWT({ client_id: 'gp', scope: 'system/Patient.rs', purpose_of_use: ['TREAT'], client_key: clientKeyOf(h.clients.get('gp')!) }).setProtectedHeader({ alg: 'ES384', kid: key.kid }).setIssuer(aud).setAudience(aud).setSubject('gp').setExpirationTime(now + 300).sign(key.privateKey);
    assert.equal((await h.anonymous.get('/Patient', { Authorization: `Bearer ${await token('https://internal.example/fhir')}` })).status, 200);
    assert.equal((await h.anonymous.get('/Patient', { Authorization: `Bearer ${await token('https://other.example/fhir')}` })).status, 401);
  });
});

describe('Identity: the audience rule', () => {
  it('is the configured base URL, else the listen address (localhost for a wildcard HOST)', () => {
    assert.equal(audienceOf({ baseUrl: 'https://fhir.example', extraBaseUrls: [] }, LISTEN).issuer, 'https://fhir.example');
    assert.equal(audienceOf({ baseUrl: undefined, extraBaseUrls: [] }, LISTEN).tokenEndpoint, `${LISTEN}/auth/token`);
    assert.equal(listenBaseUrl('127.0.0.1', 8080), LISTEN);
    assert.equal(listenBaseUrl('0.0.0.0', 8080), 'http://localhost:8080');
    assert.equal(listenBaseUrl('::1', 9000), 'http://[::1]:9000');
  });

  it('refuses to name the server at all when neither is known (no tokens rather than spoofable ones)', () => {
    assert.throws(() => audienceOf({ baseUrl: undefined, extraBaseUrls: [] }, undefined), /CUSTODIAN_BASE_URL/);
  });

  it('checks CUSTODIAN_EXTRA_BASE_URLS at start-up, naming the variable', () => {
    assert.deepEqual(loadConfig({ CUSTODIAN_EXTRA_BASE_URLS: 'https://a.example/fhir/ https://b.example' }).extraBaseUrls, ['https://a.example/fhir', 'https://b.example']);
    assert.throws(() => loadConfig({ CUSTODIAN_EXTRA_BASE_URLS: 'not a url' }), (err: Error) => err instanceof ConfigError && /CUSTODIAN_EXTRA_BASE_URLS/.test(err.message));
  });
});
