import assert from 'node:assert/strict';
import { decodeJwt, decodeProtectedHeader, SignJWT, UnsecuredJWT, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { clientAssertion, type TestClient } from '../support/auth';
import { startHarness, type Harness } from '../support/harness';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const TOKEN_URL = 'http://custodian.test/fhir/auth/token';

describe('Identity: the token endpoint (SMART Backend Services)', () => {
  let h: Harness;
  let gp: TestClient;
  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'A81001', scopes: ['system/Patient.cruds', 'system/Consent.rs'], purposes: ['TREAT', 'ETREAT', 'HOPERAT'] },
        { clientId: 'research', ods: 'R1', scopes: ['system/Patient.rs'], purposes: ['HRESCH'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Patient.rs'], purposes: ['HOPERAT', 'PUBHLTH', 'TREAT'] },
      ],
    });
    gp = h.clients.get('gp')!;
  });
  after(() => h.close());

  async function post(form: Record<string, string | undefined>) {
    const body = new URLSearchParams(Object.entries(form).filter((e): e is [string, string] => e[1] !== undefined)).toString();
    return h.anonymous.request('post', '/auth/token', { body, raw: true, contentType: 'application/x-www-form-urlencoded' });
  }
  async function ask(assertion: string, extra: Record<string, string> = {}) {
    return post({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, scope: 'system/Patient.rs', ...extra });
  }
  const json = (res: { text: string }) => JSON.parse(res.text) as Record<string, unknown>;

  describe('discovery', () => {
    it('publishes /.well-known/smart-configuration without authentication', async () => {
      const res = await h.anonymous.get('/.well-known/smart-configuration');
      assert.equal(res.status, 200);
      const c = json(res);
      assert.equal(c.token_endpoint, TOKEN_URL);
      assert.deepEqual(c.token_endpoint_auth_methods_supported, ['private_key_jwt']);
      assert.deepEqual(c.token_endpoint_auth_signing_alg_values_supported, ['RS384', 'ES384']);
      for (const cap of ['client-confidential-asymmetric', 'permission-v1', 'permission-v2']) assert.ok((c.capabilities as string[]).includes(cap), cap);
      assert.ok((c.scopes_supported as string[]).length > 0);
      assert.deepEqual(c.grant_types_supported, ['client_credentials']);
    });

    it('names the token endpoint in CapabilityStatement.rest.security (oauth-uris)', async () => {
      const cs = (await h.anonymous.get('/metadata')).body;
      const ext = cs.rest[0].security.extension.find((e: { url: string }) => e.url === 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
      assert.deepEqual(ext.extension, [{ url: 'token', valueUri: TOKEN_URL }]);
      assert.equal(cs.rest[0].security.service[0].coding[0].code, 'SMART-on-FHIR');
    });

    it('publishes the server\'s public signing key, without private parts', async () => {
      const jwks = json(await h.anonymous.get('/.well-known/jwks.json')) as { keys: JWK[] };
      assert.equal(jwks.keys.length, 1);
      assert.equal(jwks.keys[0].d, undefined);
    });
  });

  describe('issuing', () => {
    it('answers {access_token, token_type, expires_in, scope} for a good assertion', async () => {
      const res = await ask(await clientAssertion(gp, TOKEN_URL, Date.now()));
      assert.equal(res.status, 200, res.text);
      const t = json(res);
      assert.equal(t.token_type, 'Bearer');
      assert.equal(t.expires_in, 3600);
      assert.equal(t.scope, 'system/Patient.rs');
      assert.equal(res.headers['cache-control'], 'no-store');
      const claims = decodeJwt(t.access_token as string);
      assert.equal(claims.aud, 'http://custodian.test/fhir');
      assert.equal(claims.iss, 'http://custodian.test/fhir');
      assert.equal(claims.sub, 'gp');
      assert.deepEqual(claims.purpose_of_use, ['TREAT']);
      assert.equal(decodeProtectedHeader(t.access_token as string).alg, 'ES384');
    });

    it('grants the intersection of requested and registered scopes, v1 and v2', async () => {
      const grant = async (scope: string) => json(await ask(await clientAssertion(gp, TOKEN_URL, Date.now()), { scope })).scope;
      assert.equal(await grant('system/Patient.read system/AuditEvent.read'), 'system/Patient.read');
      assert.equal(await grant('system/*.rs'), 'system/Patient.rs system/Consent.rs');
      assert.equal(await grant('system/Consent.cruds'), 'system/Consent.rs');
      assert.equal(await grant('system/*.write'), 'system/Patient.write');
      assert.equal(await grant('system/Patient.cruds launch openid'), 'system/Patient.cruds');
    });

    it('takes the purpose of use from the HL7 B2B extension, in both system#code forms, or from purpose_of_use', async () => {
      const purposeOf = async (res: { text: string }) => decodeJwt(json(res).access_token as string).purpose_of_use;
      const b2b = (p: string) => ({ extensions: { 'hl7-b2b': { version: '1', purpose_of_use: [p] } } });
      assert.deepEqual(await purposeOf(await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { claims: b2b('urn:oid:2.16.840.1.113883.5.8#ETREAT') }))), ['ETREAT']);
      assert.deepEqual(await purposeOf(await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { claims: b2b('http://terminology.hl7.org/CodeSystem/v3-ActReason#HOPERAT') }))), ['HOPERAT']);
      assert.deepEqual(await purposeOf(await ask(await clientAssertion(gp, TOKEN_URL, Date.now()), { purpose_of_use: 'ETREAT' })), ['ETREAT']);
    });

    it('without a purpose, gives TREAT when the client is registered for it, else the client\'s first registered purpose', async () => {
      const purposeOf = async (client: TestClient) => {
        const res = await ask(await clientAssertion(client, TOKEN_URL, Date.now()));
        assert.equal(res.status, 200, res.text);
        return decodeJwt(json(res).access_token as string).purpose_of_use;
      };
      assert.deepEqual(await purposeOf(gp), ['TREAT']);
      assert.deepEqual(await purposeOf(h.clients.get('national')!), ['TREAT'], 'TREAT, though registered after others');
      assert.deepEqual(await purposeOf(h.clients.get('research')!), ['HRESCH']);
    });

    it('accepts a parameter sent without a value as if it were omitted (RFC 6749 section 3.2)', async () => {
      const body = `grant_type=client_credentials&client_assertion_type=${encodeURIComponent(ASSERTION_TYPE)}&client_assertion=${await clientAssertion(gp, TOKEN_URL, Date.now())}&scope=system%2FPatient.rs&purpose_of_use=&purpose_of_use=`;
      const res = await h.anonymous.request('post', '/auth/token', { body, raw: true, contentType: 'application/x-www-form-urlencoded' });
      assert.equal(res.status, 200, res.text);
    });
  });

  describe('refusing (RFC 6749 error bodies, never a token)', () => {
    const expectError = async (res: { status: number; text: string }, status: number, error: string) => {
      assert.equal(res.status, status, res.text);
      const body = json(res);
      assert.equal(body.error, error, res.text);
      assert.ok(typeof body.error_description === 'string' && body.error_description.length > 0);
      assert.equal(body.access_token, undefined);
    };
    const otherKey = async (kid: string, alg = 'ES384'): Promise<JWK> => {
      const { privateKey } = await generateKeyPair(alg, { extractable: true });
      return { ...(await exportJWK(privateKey)), kid, alg };
    };

    it('a grant_type other than client_credentials: unsupported_grant_type', async () => {
      await expectError(await post({ grant_type: 'password', client_assertion_type: ASSERTION_TYPE, client_assertion: await clientAssertion(gp, TOKEN_URL, Date.now()), scope: 'system/Patient.rs' }), 400, 'unsupported_grant_type');
    });
    it('a missing or wrong client_assertion_type, or no assertion: invalid_client', async () => {
      await expectError(await post({ grant_type: 'client_credentials', client_assertion: await clientAssertion(gp, TOKEN_URL, Date.now()), scope: 'system/Patient.rs' }), 401, 'invalid_client');
      await expectError(await post({ grant_type: 'client_credentials', client_assertion_type: 'urn:x', client_assertion: await clientAssertion(gp, TOKEN_URL, Date.now()), scope: 'x' }), 401, 'invalid_client');
      await expectError(await post({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, scope: 'system/Patient.rs' }), 401, 'invalid_client');
      await expectError(await ask('not.a.jwt'), 401, 'invalid_client');
    });
    it('an unsigned (alg none) or HS256 assertion: invalid_client', async () => {
      const now = Math.floor(Date.now() / 1000);
      const unsecured = new UnsecuredJWT({ jti: 'n1' }).setIssuer('gp').setSubject('gp').setAudience(TOKEN_URL).setExpirationTime(now + 60).encode();
      await expectError(await ask(unsecured), 401, 'invalid_client');
      const hs = await new SignJWT({ jti: 'h1' }).setProtectedHeader({ alg: 'HS256', kid: gp.privateJwk.kid }).setIssuer('gp').setSubject('gp').setAudience(TOKEN_URL).setExpirationTime(now + 60).sign(new TextEncoder().encode('x'.repeat(32)));
      await expectError(await ask(hs), 401, 'invalid_client');
    });
    it('an unknown client, a kid not in its JWKS, a signature by another key: invalid_client', async () => {
      const stranger = { ...gp, clientId: 'stranger' };
      await expectError(await ask(await clientAssertion(stranger, TOKEN_URL, Date.now())), 401, 'invalid_client');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { jwk: await otherKey('unknown-kid') })), 401, 'invalid_client');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { jwk: await otherKey(gp.privateJwk.kid!) })), 401, 'invalid_client');
    });
    it('wrong aud, iss not equal to sub, expired, too long-lived, no jti: invalid_client', async () => {
      await expectError(await ask(await clientAssertion(gp, 'http://elsewhere/token', Date.now())), 401, 'invalid_client');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { claims: { sub: 'research' } })), 401, 'invalid_client');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now() - 600000)), 401, "invalid_client");
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { lifetime: 900 })), 401, 'invalid_client');
      const key = await importJWK(gp.privateJwk, 'ES384');
      const now = Math.floor(Date.now() / 1000);
      const noJti = await new SignJWT({}).setProtectedHeader({ alg: 'ES384', kid: gp.privateJwk.kid }).setIssuer('gp').setSubject('gp').setAudience(TOKEN_URL).setExpirationTime(now + 60).sign(key);
      await expectError(await ask(noJti), 401, 'invalid_client');
      const noKid = await new SignJWT({ jti: 'k' }).setProtectedHeader({ alg: 'ES384' }).setIssuer('gp').setSubject('gp').setAudience(TOKEN_URL).setExpirationTime(now + 60).sign(key);
      await expectError(await ask(noKid), 401, 'invalid_client');
    });
    it('a replayed jti within its lifetime: invalid_client', async () => {
      const assertion = await clientAssertion(gp, TOKEN_URL, Date.now());
      assert.equal((await ask(assertion)).status, 200);
      await expectError(await ask(assertion), 401, 'invalid_client');
    });
    it('no scope: invalid_request; no registered scope among the requested: invalid_scope', async () => {
      await expectError(await post({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: await clientAssertion(gp, TOKEN_URL, Date.now()) }), 400, 'invalid_request');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now()), { scope: 'system/AuditEvent.rs' }), 400, 'invalid_scope');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now()), { scope: 'patient/Patient.rs' }), 400, 'invalid_scope');
    });
    it('a purpose the client is not registered for: invalid_scope; an unknown or second purpose: invalid_request', async () => {
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now()), { purpose_of_use: 'HRESCH' }), 400, 'invalid_scope');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now()), { purpose_of_use: 'SNOOPING' }), 400, 'invalid_request');
      await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now()), { purpose_of_use: 'TREAT ETREAT' }), 400, 'invalid_request');
      const research = h.clients.get('research')!;
      await expectError(await ask(await clientAssertion(research, TOKEN_URL, Date.now()), { purpose_of_use: 'TREAT' }), 400, 'invalid_scope');
    });
    it('a repeated parameter, even with the same value: invalid_request (RFC 6749 section 3.2), and no token', async () => {
      const assertion = await clientAssertion(gp, TOKEN_URL, Date.now());
      const base = `grant_type=client_credentials&client_assertion_type=${encodeURIComponent(ASSERTION_TYPE)}&scope=system%2FPatient.rs`;
      for (const body of [
        `${base}&client_assertion=${assertion}&client_assertion=${assertion}`,
        `${base}&client_assertion=${assertion}&client_assertion=${await clientAssertion(gp, TOKEN_URL, Date.now())}`,
        `${base}&client_assertion=${assertion}&scope=system%2FPatient.cruds`,
        `${base}&client_assertion=${assertion}&grant_type=client_credentials`,
        `${base}&client_assertion=${assertion}&purpose_of_use=TREAT&purpose_of_use=TREAT`,
      ]) {
        const res = await h.anonymous.request('post', '/auth/token', { body, raw: true, contentType: 'application/x-www-form-urlencoded' });
        await expectError(res, 400, 'invalid_request');
        assert.match(json(res).error_description as string, /repeated/);
      }
      assert.equal((await ask(assertion)).status, 200, 'and the refused requests did not use up the assertion');
    });

    it('a malformed HL7 B2B extension: invalid_request, never a silent default purpose', async () => {
      for (const extensions of [{ 'hl7-b2b': 5 }, 'x', ['hl7-b2b'], { 'hl7-b2b': { purpose_of_use: ['TREAT'] } }, { 'hl7-b2b': { version: 1, purpose_of_use: ['TREAT'] } }, { 'hl7-b2b': { version: '1', purpose_of_use: 'TREAT' } }, { 'hl7-b2b': { version: '1', purpose_of_use: [] } }, { 'hl7-b2b': { version: '1', purpose_of_use: [5] } }, { 'hl7-b2b': { version: '1' }, other: null }]) {
        const res = await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { claims: { extensions } }));
        await expectError(res, 400, 'invalid_request');
      }
      const ok = await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { claims: { extensions: { 'hl7-b2b': { version: '1', subject_name: 'Dr Who' }, 'other-ext': { a: 1 } } } }));
      assert.equal(ok.status, 200, 'a well-formed B2B extension without a purpose leaves the default');
    });

    it('a jti that is not a string: invalid_client (RFC 7519 section 4.1.7)', async () => {
      for (const jti of [42, { id: 'x' }, '']) await expectError(await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { claims: { jti } })), 401, 'invalid_client');
    });

    it('an unknown client, a kid not in its JWKS and a bad signature read the same, so client ids cannot be enumerated', async () => {
      const stranger = { ...gp, clientId: 'no-such-client' };
      const answers = [
        await ask(await clientAssertion(stranger, TOKEN_URL, Date.now())),
        await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { jwk: await otherKey('unknown-kid') })),
        await ask(await clientAssertion(gp, TOKEN_URL, Date.now(), { jwk: await otherKey(gp.privateJwk.kid!) })),
      ];
      for (const res of answers) await expectError(res, 401, 'invalid_client');
      assert.equal(new Set(answers.map((r) => r.text)).size, 1, answers.map((r) => r.text).join('\n'));
      assert.doesNotMatch(answers[0].text, /no-such-client|kid|unknown/);
    });

    it('a JSON body instead of a form: invalid_request', async () => {
      const res = await h.anonymous.request('post', '/auth/token', { body: { grant_type: 'client_credentials' }, contentType: 'application/json' });
      await expectError(res, 400, 'invalid_request');
    });
  });
});
