import assert from 'node:assert/strict';
import type { Bundle } from 'fhir/r4';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';
import { Api } from '../support/api';
import { consentFor, managedPatient, org } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * A search's paging cursor is sealed and bound to the search that issued it, and to the client
 * that asked: replayed by another client, the edge of a page of results it could not see whole
 * would tell it where hidden resources lie in the order. Found by a second reading of the gate
 * (stop 22): the hospital replaying the GP's `next` link got the page after a Patient hidden
 * from it.
 */
describe('Consent: search cursors are bound to the client that got them', () => {
  let h: Harness;
  let gp: Api;
  let hospital: Api;
  let idpKey: KeyLike;
  const IDP = 'https://idp.portal.example';

  before(async () => {
    const pair = await generateKeyPair('ES256');
    idpKey = pair.privateKey;
    h = await startHarness({
      trusted: [{ issuer: IDP, keys: createLocalJWKSet({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k', alg: 'ES256' }] }), algorithms: ['ES256'], purposes: ['TREAT'] }],
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.rs'], purposes: ['TREAT'] },
      ],
    });
    gp = await h.as('gp');
    hospital = await h.as('hospital');
    // A and C let the hospital see them, B does not; in birth-date order A, B, C.
    for (const [family, nhs, born, shared] of [
      ['Cursora', '9434765919', '1950-01-01', true],
      ['Cursorb', '9434765811', '1960-01-01', false],
      ['Cursorc', '9434765838', '1970-01-01', true],
    ] as const) {
      const id = (await gp.post('/Patient', managedPatient(family, nhs, { birthDate: born }))).body.id as string;
      if (shared) await gp.post('/Consent', consentFor(id, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }));
    }
  });
  after(() => h.close());

  const families = (b: Bundle) => (b.entry ?? []).map((e) => (e.resource as unknown as { name: { family: string }[] }).name[0].family);
  const next = (b: Bundle) => b.link?.find((l) => l.relation === 'next')?.url;
  const pathOf = (url: string) => url.slice(url.indexOf('/Patient'));

  it('another client replaying a next link gets a 400, not the page after a resource hidden from it', async () => {
    const first = (await gp.get('/Patient?family=Cursor&_sort=birthdate&_count=2')).body as Bundle;
    assert.deepEqual(families(first), ['Cursora', 'Cursorb']);
    const link = next(first)!;
    assert.ok(link);
    const replayed = await hospital.get(pathOf(link));
    assert.equal(replayed.status, 400);
    assert.doesNotMatch(JSON.stringify(replayed.body), /Cursorc/);
    // The link still works for the client that got it.
    assert.deepEqual(families((await gp.get(pathOf(link))).body as Bundle), ['Cursorc']);
  });

  it('tokens of one shared app (one client id) for two organisations do not take each other\'s cursors', async () => {
    const as = async (organization: string) => {
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({ iss: IDP, aud: h.config.baseUrl!, exp: now + 300, client_id: 'shared-app', organization, scope: 'user/Patient.rs' })
        .setProtectedHeader({ alg: 'ES256', kid: 'k' })
        .sign(idpKey);
      return new Api(h.app.express, token);
    };
    const atGp = await as('GP1');
    const atHospital = await as('HOSP1');
    const first = await atGp.get('/Patient?family=Cursor&_sort=birthdate&_count=2');
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual(families(first.body as Bundle), ['Cursora', 'Cursorb']);
    const replayed = await atHospital.get(pathOf(next(first.body as Bundle)!));
    assert.equal(replayed.status, 400);
    assert.doesNotMatch(JSON.stringify(replayed.body), /Cursorc/);
  });

  it('each client pages through what it may see with its own links', async () => {
    const first = (await hospital.get('/Patient?family=Cursor&_sort=birthdate&_count=1')).body as Bundle;
    assert.deepEqual(families(first), ['Cursora']);
    const second = (await hospital.get(pathOf(next(first)!))).body as Bundle;
    assert.deepEqual(families(second), ['Cursorc']);
  });
});
