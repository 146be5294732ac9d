import assert from 'node:assert/strict';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';
import { formatScope, grant, intersect, parseScope } from '../../server/access/scopes';
import { parseTrustedIssuers } from '../../server/access/tokens';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const BASE = 'http://custodian.test/fhir';
const IDP = 'https://idp.hospital.example';
const LOINC_PRIVACY = 'http://loinc.org|59284-0';
const RESEARCH = 'http://terminology.hl7.org/CodeSystem/consentcategorycodes|research';

describe('Identity: SMART scopes', () => {
  describe('parsing and granting (table)', () => {
    const cases: [string, string | null][] = [
      ['system/Patient.read', 'system/Patient.read'],
      ['system/*.write', 'system/*.write'],
      ['patient/*.read', 'patient/*.read'],
      ['user/Consent.*', 'user/Consent.*'],
      ['system/Patient.rs', 'system/Patient.rs'],
      ['system/Consent.cruds', 'system/Consent.cruds'],
      ['system/Consent.rs?category=http://loinc.org|59284-0', 'system/Consent.rs?category=http%3A%2F%2Floinc.org%7C59284-0'],
      ['system/Patient.sr', null],
      ['system/Patient.rr', null],
      ['system/Observation.read', null],
      ['system/Patient.read?active=true', null],
      ['launch/patient', null],
      ['openid', null],
    ];
    for (const [text, expected] of cases) {
      it(`${text} ${expected ? 'parses' : 'is refused'}`, () => {
        const s = parseScope(text);
        assert.equal(s ? formatScope(s) : null, expected);
      });
    }
    it('intersects wildcards, permissions and granular queries', () => {
      assert.equal(formatScope(intersect(parseScope('system/*.rs')!, parseScope('system/Consent.cruds')!)!), 'system/Consent.rs');
      assert.equal(intersect(parseScope('patient/*.rs')!, parseScope('system/*.rs')!), null);
      assert.equal(formatScope(intersect(parseScope('system/Consent.rs')!, parseScope('system/Consent.rs?category=a|b')!)!), 'system/Consent.rs?category=a%7Cb');
      assert.deepEqual(grant(['system/*.read'], ['system/Patient.cruds', 'system/AuditEvent.c']), ['system/Patient.read']);
    });
  });

  describe('enforced per interaction and per resource', () => {
    let h: Harness;
    let idpKey: KeyLike;
    let alice: string;
    let bob: string;
    before(async () => {
      const pair = await generateKeyPair('ES256');
      idpKey = pair.privateKey;
      const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'idp-1', alg: 'ES256' };
      h = await startHarness({
        clients: [
          { clientId: 'v1-reader', ods: 'TADMIN', scopes: ['system/Patient.read'], purposes: ['TREAT'] },
          { clientId: 'v2-creator', ods: 'TADMIN', scopes: ['system/Patient.c', 'system/Consent.s'], purposes: ['TREAT'] },
          { clientId: 'v2-updater', ods: 'TADMIN', scopes: ['system/Patient.cu'], purposes: ['TREAT'] },
          { clientId: 'privacy-only', ods: 'TADMIN', scopes: [`system/Consent.rs?category=${LOINC_PRIVACY}`], purposes: ['TREAT'] },
          { clientId: 'empty-restriction', ods: 'TADMIN', scopes: ['system/Consent.rs?category='], purposes: ['TREAT'] },
        ],
        trusted: [{ issuer: IDP, keys: createLocalJWKSet({ keys: [jwk] }), algorithms: ['ES256'], purposes: ['TREAT', 'ETREAT', 'PATRQT'] }],
      });
      alice = (await h.api.post('/Patient', patient({ name: [{ family: 'Alice' }] }))).body.id;
      bob = (await h.api.post('/Patient', patient({ name: [{ family: 'Bob' }] }))).body.id;
      await h.api.post('/Consent', consent(alice));
      await h.api.post('/Consent', consent(bob));
      await h.api.post('/Consent', consent(alice, { category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentcategorycodes', code: 'research' }] }] }));
    });
    after(() => h.close());

    async function external(claims: Record<string, unknown>): Promise<string> {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ iss: IDP, aud: BASE, exp: now + 300, iat: now, client_id: 'patient-app', ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'idp-1' }).sign(idpKey);
    }

    it('v1 system/Patient.read: read and search Patients, nothing else', async () => {
      const api = await h.as('v1-reader');
      assert.equal((await api.get(`/Patient/${alice}`)).status, 200);
      assert.equal((await api.get('/Patient')).status, 200);
      assert.equal((await api.get(`/Patient/${alice}/_history`)).status, 200);
      assert.equal((await api.post('/Patient', patient())).status, 403);
      assert.equal((await api.get('/Consent')).status, 403);
      assert.equal((await api.get('/AuditEvent')).status, 403);
    });

    it('v2 .c and .s: create but not read Patients; search but not read Consents', async () => {
      const api = await h.as('v2-creator');
      const created = await api.post('/Patient', patient());
      assert.equal(created.status, 201);
      assert.equal((await api.get(`/Patient/${created.body.id}`)).status, 403);
      assert.equal((await api.get('/Patient')).status, 403);
      assert.equal((await api.get('/Consent?_count=1')).status, 200);
      const consentId = (await h.api.get('/Consent?_count=1')).body.entry[0].resource.id;
      assert.equal((await api.get(`/Consent/${consentId}`)).status, 403);
    });

    it('writing without read or search scopes reads nothing: no conditional match, no patch', async () => {
      // Found by a second reading (stop 23): If-None-Exist returned a matching Patient whole to a
      // create-only token, and a patch (its tests, its result) read one for an update-only token.
      const creator = await h.as('v2-creator');
      const probe = await creator.post('/Patient', { resourceType: 'Patient', gender: 7 }, { 'If-None-Exist': `_id=${alice}` });
      assert.equal(probe.status, 403, probe.text);
      assert.doesNotMatch(probe.text, /Alice/);
      assert.match(probe.headers['www-authenticate'] ?? '', /insufficient_scope/);
      const updater = await h.as('v2-updater');
      for (const res of [
        await updater.patch(`/Patient/${alice}`, [{ op: 'test', path: '/name/0/family', value: 'Alice' }]),
        await updater.patch(`/Patient/${alice}`, []),
        await updater.put(`/Patient?_id=${alice}`, patient({ name: [{ family: 'Alice' }] })),
        await updater.delete(`/Patient?_id=${alice}`),
      ]) {
        assert.equal(res.status, 403, res.text);
        assert.doesNotMatch(res.text, /Alice/);
      }
      // A plain update still works: it sends what it writes.
      const current = (await h.api.get(`/Patient/${alice}`)).body;
      assert.equal((await updater.put(`/Patient/${alice}`, current)).status, 200);
    });

    it('system history lists only the types the scopes cover', async () => {
      const api = await h.as('v1-reader');
      const history = (await api.get('/_history?_count=100')).body;
      assert.ok(history.entry.length >= 2);
      assert.ok(history.entry.every((e: { fullUrl: string }) => e.fullUrl.includes('/Patient/')));
    });

    it('granular scopes (v2 ?category=): only matching Consents are readable or found', async () => {
      const api = await h.as('privacy-only');
      const found = (await api.get('/Consent?_total=accurate')).body;
      assert.equal(found.total, 2);
      for (const e of found.entry) assert.equal(e.resource.category[0].coding[0].code, '59284-0');
      const research = (await h.api.get(`/Consent?category=${encodeURIComponent(RESEARCH)}`)).body.entry[0].resource.id;
      const hidden = await api.get(`/Consent/${research}`);
      assert.equal(hidden.status, 403);
      assert.doesNotMatch(hidden.text, /research/);
      assert.equal((await api.get(`/Consent?category=${encodeURIComponent(RESEARCH)}&_total=accurate`)).body.total, 0);
      assert.equal((await api.get(`/Consent/${research}/_history`)).status, 403);
    });

    it('a granular scope with an empty value grants nothing (search ignores empty parameters; a scope must not widen by it)', async () => {
      const codeless = await h.api.post('/Consent', consent(alice, { category: [{ coding: [{ system: 'http://loinc.org' }] }] }));
      assert.equal(codeless.status, 201, codeless.text);
      try {
        const api = await h.as('empty-restriction');
        const found = await api.get('/Consent?_total=accurate');
        assert.equal(found.status, 200, found.text);
        assert.equal(found.body.total, 0);
        assert.equal((await api.get(`/Consent/${codeless.body.id}`)).status, 403);
      } finally {
        await h.api.delete(`/Consent/${codeless.body.id}`);
      }
    });

    it('patient/ scopes confine a token to its patient\'s compartment', async () => {
      const token = await external({ scope: 'patient/Patient.rs patient/Consent.rs', patient: alice, purpose_of_use: 'PATRQT' });
      const headers = { Authorization: `Bearer ${token}` };
      assert.equal((await h.anonymous.get(`/Patient/${alice}`, headers)).status, 200);
      const other = await h.anonymous.get(`/Patient/${bob}`, headers);
      assert.equal(other.status, 403);
      assert.doesNotMatch(other.text, /Bob/);
      const patients = (await h.anonymous.get('/Patient?_total=accurate', headers)).body;
      assert.deepEqual(patients.entry.map((e: { resource: { id: string } }) => e.resource.id), [alice]);
      const consents = (await h.anonymous.get('/Consent?_total=accurate', headers)).body;
      assert.equal(consents.total, 2);
      assert.ok(consents.entry.every((e: { resource: { patient: { reference: string } } }) => e.resource.patient.reference === `Patient/${alice}`));
      assert.equal((await h.anonymous.get(`/Consent?patient=${bob}&_total=accurate`, headers)).body.total, 0);
      const noPatient = await external({ scope: 'patient/Patient.rs' });
      assert.equal((await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${noPatient}` })).status, 403);
    });

    it("a clinician's token with the open record as its patient context is not that patient", async () => {
      // Found by a second reading (stop 23): a `patient` claim beside user/ scopes (an EHR launch's
      // context) made the clinician the patient: their record read as the patient's own, their
      // Consents written and their access report read as theirs.
      const carol = (await h.api.post('/Patient', patient({ name: [{ family: 'Carol' }] }))).body.id as string;
      const clinician = await external({ scope: 'user/Patient.rs user/Consent.cruds', patient: carol, fhirUser: 'https://idp.hospital.example/fhir/Practitioner/dr-x', organization: 'HOSPX', purpose_of_use: 'TREAT' });
      const headers = { Authorization: `Bearer ${clinician}` };
      assert.equal((await h.anonymous.get(`/Patient/${carol}`, headers)).status, 403, 'no Consent lets HOSPX see Carol');
      assert.equal((await h.anonymous.post('/Consent', consent(carol), headers)).status, 403, 'nor write her Consents');
      const carolConsent = (await h.api.post('/Consent', consent(carol, { provision: { type: 'deny' } }))).body.id as string;
      assert.equal((await h.anonymous.delete(`/Consent/${carolConsent}`, headers)).status, 403, 'nor drop her refusal');
      assert.equal((await h.anonymous.get(`/Patient/${carol}/$access-report`, headers)).status, 403, 'nor review her record');
      // Nor is a token whose read scopes are patient/ ones but which can also write as a user (found by a third reading).
      const mixed = await external({ scope: 'patient/AuditEvent.rs user/Patient.c', patient: carol, organization: 'HOSPX', purpose_of_use: 'TREAT' });
      assert.equal((await h.anonymous.get(`/Patient/${carol}/$access-report`, { Authorization: `Bearer ${mixed}` })).status, 403);
      // The patient's own app still is the patient.
      const own = await external({ scope: 'patient/Patient.rs patient/Consent.rs', patient: carol, purpose_of_use: 'PATRQT' });
      assert.equal((await h.anonymous.get(`/Patient/${carol}`, { Authorization: `Bearer ${own}` })).status, 200);
    });

    it('accepts trusted external issuers\' tokens with fhirUser, organization and purpose; refuses unknown issuers', async () => {
      const token = await external({ scope: 'user/Patient.rs', fhirUser: 'https://idp.hospital.example/fhir/Practitioner/dr-who', organization: 'TADMIN', purpose_of_use: 'urn:oid:2.16.840.1.113883.5.8#ETREAT' });
      assert.equal((await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${token}` })).status, 200);
      const { privateKey } = await generateKeyPair('ES256');
      const now = Math.floor(Date.now() / 1000);
      const stranger = await new SignJWT({ iss: 'https://evil.example', aud: BASE, exp: now + 60, scope: 'system/*.cruds', client_id: 'x' }).setProtectedHeader({ alg: 'ES256', kid: 'idp-1' }).sign(privateKey);
      assert.equal((await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${stranger}` })).status, 401);
      const forgedIdp = await new SignJWT({ iss: IDP, aud: BASE, exp: now + 60, scope: 'system/*.cruds', client_id: 'x' }).setProtectedHeader({ alg: 'ES256', kid: 'idp-1' }).sign(privateKey);
      assert.equal((await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${forgedIdp}` })).status, 401);
      const badPurpose = await external({ scope: 'user/Patient.rs', purpose_of_use: 'SNOOP' });
      assert.equal((await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${badPurpose}` })).status, 401);
    });

    it('a trusted issuer may assert only the purposes its entry lists: its tokens claiming BTG or research are refused', async () => {
      for (const purpose of ['BTG', 'HRESCH', 'urn:oid:2.16.840.1.113883.5.8#PUBHLTH', ['TREAT', 'ETREAT']]) {
        const token = await external({ scope: 'user/Patient.rs', organization: 'TADMIN', purpose_of_use: purpose });
        const res = await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${token}` });
        assert.equal(res.status, 401, JSON.stringify(purpose));
        assert.match(res.headers['www-authenticate'], /invalid_token/);
        assert.doesNotMatch(res.text, /Alice/);
      }
      const listed = await external({ scope: 'user/Patient.rs', organization: 'TADMIN', purpose_of_use: ['ETREAT'] });
      assert.equal((await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${listed}` })).status, 200);
    });

    it('a trusted issuer\'s token naming the server\'s own client id (the writer of its AuditEvents) is refused', async () => {
      const token = await external({ client_id: 'custodian-server', scope: 'system/AuditEvent.rs', organization: 'TADMIN' });
      const res = await h.anonymous.get('/AuditEvent', { Authorization: `Bearer ${token}` });
      assert.equal(res.status, 401);
      assert.match(res.headers['www-authenticate'], /invalid_token/);
    });

    it('a trusted issuer\'s token naming a client registered here is refused: what is kept by client id stays that client\'s', async () => {
      const token = await external({ client_id: 'v1-reader', scope: 'user/Patient.rs', organization: 'TADMIN' });
      const res = await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${token}` });
      assert.equal(res.status, 401);
      assert.match(res.headers['www-authenticate'], /invalid_token/);
      assert.doesNotMatch(res.text, /Alice/);
    });

    it('a trusted issuer\'s purposes default to TREAT, and must be v3-ActReason codes', async () => {
      const { publicKey } = await generateKeyPair('ES256');
      const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'k' }] };
      assert.deepEqual(parseTrustedIssuers([{ issuer: IDP, jwks }], 'issuers.json')[0].purposes, ['TREAT']);
      assert.deepEqual(parseTrustedIssuers([{ issuer: IDP, jwks, purposes: ['TREAT', 'ETREAT'] }], 'issuers.json')[0].purposes, ['TREAT', 'ETREAT']);
      for (const purposes of [[], ['SNOOP'], 'TREAT']) {
        assert.throws(() => parseTrustedIssuers([{ issuer: IDP, jwks, purposes }], 'issuers.json'), /issuers\.json: entry 0 \(https:\/\/idp\.hospital\.example\): purposes/);
      }
    });
  });
});
