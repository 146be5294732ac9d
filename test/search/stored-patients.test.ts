import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AuditEvent, Bundle, Consent, Resource } from 'fhir/r4';
import { definitions, PATIENT_IDS_REVISION, type ResourceType } from '../../resources';
import type { Api } from '../support/api';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';
import { org } from '../feed/fixtures';

/**
 * Every current row keeps the patients its content is about (`resources.patients`), so that a
 * search page is decided and audited without parsing each resource (store/records.ts). These
 * tests hold the column to the content it stands for, and show that a row without it (written
 * before it was kept) is decided and audited exactly as one with it.
 */
describe('Search: the patients each row keeps for its decisions and its audit', () => {
  let h: Harness;
  let gp: Api;
  let national: Api;
  let hospital: Api;
  let auditor: Api;
  let alice: string;
  let bob: string;
  /** Another practice's patient. */
  let carol: string;

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds', 'system/AuditEvent.rs'], purposes: ['TREAT'] },
        { clientId: 'gp2', ods: 'GP2', scopes: ['system/Patient.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Consent.rs', 'system/Patient.rs'], purposes: ['TREAT'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
      ],
    });
    gp = await h.as('gp');
    national = await h.as('national', { purpose: 'PUBHLTH' });
    hospital = await h.as('hospital');
    auditor = await h.as('auditor', { purpose: 'HOPERAT' });
    const mk = async (family: string) => (await gp.post('/Patient', patient({ name: [{ family }], managingOrganization: org('GP1') }))).body.id as string;
    alice = await mk('Alice');
    bob = await mk('Bob');
    carol = (await (await h.as('gp2')).post('/Patient', patient({ name: [{ family: 'Carol' }], managingOrganization: org('GP2') }))).body.id as string;
  });
  after(() => h.close());

  async function row(type: ResourceType, id: string): Promise<{ patients: string | null; content: string | null }> {
    const r = await h.store.driver.get<{ patients: string | null; content: string | null }>('SELECT patients, content FROM resources WHERE type = ? AND id = ?', [type, id]);
    assert.ok(r, `${type}/${id} has a row`);
    return r;
  }

  /** The column holds exactly what the type's patientIds says of the row's content, for its version. */
  async function assertKept(type: ResourceType, id: string, expected: string[]): Promise<void> {
    const r = await row(type, id);
    assert.ok(r.content, `${type}/${id} has content`);
    const content = JSON.parse(r.content) as Resource;
    assert.deepEqual(definitions[type].patientIds(content), expected);
    assert.deepEqual(JSON.parse(r.patients ?? 'null'), { r: PATIENT_IDS_REVISION, v: Number(content.meta!.versionId), ids: expected }, `${type}/${id}: the row keeps the patients of its content`);
  }

  /** A search, and the patient each of its AuditEvents is about (by the request's id). */
  async function searchAudited(api: Api, path: string): Promise<{ ids: string[]; audited: string[] }> {
    const requestId = randomUUID();
    const res = await api.get(path, { 'X-Request-Id': requestId });
    assert.equal(res.status, 200, res.text);
    const ids = ((res.body as Bundle).entry ?? []).map((e) => e.resource!.id!).sort();
    const events = ((await auditor.get(`/AuditEvent?entity:identifier=${requestId}&_count=100`)).body as Bundle).entry!.map((e) => e.resource as AuditEvent);
    const audited = events
      .filter((e) => e.type.code === 'rest')
      .map((e) => e.entity?.find((x) => x.role?.code === '1')?.what?.reference ?? '(none)')
      .sort();
    return { ids, audited };
  }

  it('each write keeps them: a create, an update and a patch that move a Consent to another patient, a delete (none), many at once', async () => {
    await assertKept('Patient', alice, [alice]);
    const c = await gp.post('/Consent', consent(alice));
    assert.equal(c.status, 201, c.text);
    await assertKept('Consent', c.body.id, [alice]);
    const moved = await gp.put(`/Consent/${c.body.id}`, { ...c.body, patient: { reference: `Patient/${bob}` } });
    assert.equal(moved.status, 200, moved.text);
    await assertKept('Consent', c.body.id, [bob]);
    // The national service's search is audited under the patient the Consent is about now.
    assert.deepEqual(await searchAudited(national, `/Consent?_id=${c.body.id}`), { ids: [c.body.id], audited: [`Patient/${bob}`] });
    const patched = await gp.patch(`/Consent/${c.body.id}`, [{ op: 'replace', path: '/patient/reference', value: `Patient/${alice}` }]);
    assert.equal(patched.status, 200, patched.text);
    await assertKept('Consent', c.body.id, [alice]);
    assert.equal((await gp.delete(`/Consent/${c.body.id}`)).status, 204);
    assert.equal((await row('Consent', c.body.id)).patients, null, 'a deletion keeps none');
    const again = await gp.put(`/Consent/${c.body.id}`, { ...c.body, patient: { reference: `Patient/${bob}` } });
    assert.equal(again.status, 201, again.text);
    await assertKept('Consent', c.body.id, [bob]);

    const writer = { clientId: 'gp', organization: 'https://fhir.nhs.uk/Id/ods-organization-code|GP1' };
    const many = [consent(alice), consent(bob)].map((r) => ({ ...r, id: randomUUID() }));
    await h.store.transaction((tx) => tx.createMany('Consent', many, writer));
    await assertKept('Consent', many[0].id, [alice]);
    await assertKept('Consent', many[1].id, [bob]);
    // AuditEvents keep them too (since stop 24), held to their content by $verify
    // (test/audit/tamper.test.ts): the trail's own, moved from the audit journal, and posted ones.
    await h.store.auditIndex.materialized();
    const some = (await h.store.driver.get<{ id: string; content: string }>("SELECT id, content FROM resources WHERE type = 'AuditEvent' AND content LIKE ? LIMIT 1", [`%Patient/${bob}"%`]))!;
    await assertKept('AuditEvent', some.id, [bob]);
    const event = { ...(JSON.parse(some.content) as AuditEvent), id: randomUUID() };
    await h.store.transaction((tx) => tx.createMany('AuditEvent', [event], writer));
    await assertKept('AuditEvent', event.id, [bob]);
  });

  it('a row an older build rewrote, or one kept under another revision of patientIds, is decided and audited by its content', async () => {
    const c = (await gp.post('/Consent', consent(alice))).body as Consent;
    // An older build's update: new content and version, the column left as it was.
    const moved = { ...c, patient: { reference: `Patient/${bob}` }, meta: { ...c.meta, versionId: '2' } };
    await h.store.driver.run("UPDATE resources SET content = ?, version_id = 2 WHERE type = 'Consent' AND id = ?", [JSON.stringify(moved), c.id]);
    assert.equal(JSON.parse((await row('Consent', c.id!)).patients!).ids[0], alice, 'the column is stale');
    assert.deepEqual(await searchAudited(national, `/Consent?_id=${c.id}`), { ids: [c.id!], audited: [`Patient/${bob}`] });
    // Kept under another revision: the ids are not trusted either.
    const keep = (r: number) => h.store.driver.run("UPDATE resources SET patients = ? WHERE type = 'Consent' AND id = ?", [JSON.stringify({ r, v: 2, ids: [alice] }), c.id]);
    await keep(PATIENT_IDS_REVISION + 1);
    assert.deepEqual(await searchAudited(national, `/Consent?_id=${c.id}`), { ids: [c.id!], audited: [`Patient/${bob}`] });
    // This test can fail: a column kept for the version under this revision is what decides.
    await keep(PATIENT_IDS_REVISION);
    assert.deepEqual(await searchAudited(national, `/Consent?_id=${c.id}`), { ids: [c.id!], audited: [`Patient/${alice}`] });
  });

  it('decisions read them too, for the version they were kept for only; an AuditEvent\'s too, and $verify names one that is not its content\'s', async () => {
    const c = (await gp.post('/Consent', consent(alice))).body as Consent;
    const visible = async () => ((await gp.get(`/Consent?_id=${c.id}`)).body as Bundle).entry?.length ?? 0;
    assert.equal(await visible(), 1, 'the custodian sees its patient\'s Consent');
    const keep = (type: string, id: string, v: number) => h.store.driver.run('UPDATE resources SET patients = ? WHERE type = ? AND id = ?', [JSON.stringify({ r: PATIENT_IDS_REVISION, v, ids: [carol] }), type, id]);
    // Kept for another version: not read, the content decides.
    await keep('Consent', c.id!, 2);
    assert.equal(await visible(), 1);
    // Kept for this version (this test can fail): the decision is made for another practice's patient.
    await keep('Consent', c.id!, 1);
    assert.equal(await visible(), 0, 'decided by the kept patients');
    // An AuditEvent's column decides it too (until stop 24 it was never read: every event of a
    // search page was parsed for it). What keeps that honest is $verify, which names a column
    // that is not what the chained content names, as it names an index row that is not.
    const events = async () => ((await gp.get(`/AuditEvent?patient=${alice}&_count=1000`)).body as Bundle).entry?.length ?? 0;
    assert.ok((await events()) > 0, 'the custodian reads its patient\'s trail');
    await h.store.auditIndex.materialized();
    const planted = JSON.stringify({ r: PATIENT_IDS_REVISION, v: 1, ids: [carol] });
    await h.store.driver.run("UPDATE resources SET patients = ? WHERE type = 'AuditEvent' AND content LIKE ?", [planted, `%Patient/${alice}"%`]);
    assert.equal(await events(), 0, 'decided as another practice\'s patient\'s, by the column');
    const verify = (await auditor.get('/AuditEvent/$verify')).body as { parameter: { name: string; valueBoolean?: boolean; valueCode?: string }[] };
    const out = (name: string) => verify.parameter.find((p) => p.name === name);
    assert.deepEqual([out('intact')?.valueBoolean, out('problem')?.valueCode], [false, 'patients-mismatch']);
    await h.store.driver.run("UPDATE resources SET patients = NULL WHERE type = 'AuditEvent' AND patients = ?", [planted]);
    assert.ok((await events()) > 0, 'a row without them is decided by its content');
  });

  it('a row without them (written before they were kept) is decided and audited as one with them, for every client', async () => {
    const named = (p: string) => consent(p, { provision: { type: 'permit', actor: [{ role: { text: 'r' }, reference: org('HOSP1') }] } });
    const ids = [(await gp.post('/Consent', named(alice))).body.id as string, (await gp.post('/Consent', consent(bob))).body.id as string];
    const query = `/Consent?_id=${ids.join(',')}&_count=1000`;
    const before = { national: await searchAudited(national, query), hospital: await searchAudited(hospital, query), gp: await searchAudited(gp, query) };
    assert.deepEqual(before.national, { ids: [...ids].sort(), audited: [`Patient/${alice}`, `Patient/${bob}`].sort() });
    assert.deepEqual(before.hospital, { ids: [ids[0]], audited: [`Patient/${alice}`] }, 'the hospital sees only the Consent that names it');
    await h.store.driver.run("UPDATE resources SET patients = NULL WHERE type = 'Consent'");
    for (const id of ids) assert.equal((await row('Consent', id)).patients, null);
    const after = { national: await searchAudited(national, query), hospital: await searchAudited(hospital, query), gp: await searchAudited(gp, query) };
    assert.deepEqual(after, before);
  });

  it('the search page sends what the row holds: parsed only when shaped, pretty-printed, or asked for by reference', async () => {
    const c = (await gp.post('/Consent', consent(alice))).body as Consent;
    const plain = await national.get(`/Consent?_id=${c.id}`);
    assert.deepEqual(plain.body.entry[0].resource, c);
    const pretty = await national.get(`/Consent?_id=${c.id}&_pretty=true`);
    assert.match(pretty.text, /\n {6}"resource": \{\n {8}"resourceType": "Consent",/);
    assert.deepEqual(JSON.parse(pretty.text).entry[0].resource, c);
    const summary = await national.get(`/Consent?_id=${c.id}&_elements=status`);
    assert.equal(summary.body.entry[0].resource.provision, undefined, 'shaped');
    assert.ok(summary.body.entry[0].resource.meta.tag.some((t: { code: string }) => t.code === 'SUBSETTED'));
    // A search inside a batch is written out inside the batch's response.
    const batch = await national.post('/', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Consent?_id=${c.id}` } }] });
    assert.equal(batch.status, 200, batch.text);
    assert.deepEqual(batch.body.entry[0].resource.entry[0].resource, c);
  });
});
