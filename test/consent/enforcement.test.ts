import assert from 'node:assert/strict';
import { consentFor, loadJson, managedPatient as patient, NHS, org, repoJson } from '../support/fixtures';
import type { Api, ApiResponse } from '../support/api';
import { startHarness, type Harness } from '../support/harness';
import { batchSize } from '../../server/gate/gate';

const v3 = (code: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code });

/** The hidden patient's identifying details: none may appear in any answer to the hospital. */
const HIDDEN = { family: 'Hiddenham', nhs: '9434765919' };


describe('Consent enforcement through the HTTP API', () => {
  let h: Harness;
  let gp: Api;
  let hospital: Api;
  let hospitalBtg: Api;
  let research: Api;
  let national: Api;
  let auditor: Api;
  let audit: Api;
  const ids: Record<string, string> = {};

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds', 'system/AuditEvent.crs'], purposes: ['TREAT', 'HOPERAT'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.cruds', 'system/Consent.rs', 'system/AuditEvent.rs'], purposes: ['TREAT', 'ETREAT', 'BTG', 'HRESCH'] },
        { clientId: 'research', ods: 'RES1', scopes: ['system/Patient.rs'], purposes: ['HRESCH'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs', 'system/Patient.rs'], purposes: ['HOPERAT'], roles: ['national-service'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs', 'system/Patient.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
        { clientId: 'ehr-audit', ods: 'HOSP1', scopes: ['system/AuditEvent.c'], purposes: ['HOPERAT'], roles: ['audit-source'] },
        { clientId: 'gp2', ods: 'GP2', scopes: ['system/Patient.cruds', 'system/AuditEvent.rs'], purposes: ['TREAT', 'HOPERAT'] },
        { clientId: 'lab-audit', ods: 'LAB1', scopes: ['system/AuditEvent.crs'], purposes: ['HOPERAT'], roles: ['audit-source'] },
      ],
    });
    gp = await h.as('gp');
    hospital = await h.as('hospital');
    hospitalBtg = await h.as('hospital', { purpose: 'BTG' });
    research = await h.as('research', { purpose: 'HRESCH' });
    national = await h.as('national', { purpose: 'HOPERAT' });
    auditor = await h.as('auditor', { purpose: 'HOPERAT' });
    audit = await h.as('ehr-audit', { purpose: 'HOPERAT' });
    ids.open = (await gp.post('/Patient', patient('Openshaw', '9000000009'))).body.id;
    ids.hidden = (await gp.post('/Patient', patient(HIDDEN.family, HIDDEN.nhs))).body.id;
    ids.optout = (await gp.post('/Patient', patient('Optoutson', '9876543210'))).body.id;
    ids.openConsent = (await gp.post('/Consent', consentFor(ids.open, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }))).body.id;
    await gp.post('/Consent', consentFor(ids.optout, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('RES1') }], purpose: [v3('HRESCH')] }));
    const optOut: Record<string, unknown> = { ...repoJson<Record<string, unknown>>('profiles', 'examples', 'Consent-example-national-data-opt-out.json'), patient: { reference: `Patient/${ids.optout}` } };
    delete optOut.id;
    assert.equal((await gp.post('/Consent', optOut)).status, 201);
    assert.equal((await gp.put(`/Patient/${ids.hidden}`, { ...patient(HIDDEN.family, HIDDEN.nhs), id: ids.hidden, gender: 'female' })).status, 200);
  });
  after(() => h.close());

  /**
   * Nothing in the answer identifies the hidden patient. Links are left out of the check: they
   * echo the asker's own search terms (an NHS number it typed is not a leak).
   */
  function noLeak(res: ApiResponse, allowId = false): void {
    const text = JSON.stringify(res.body ?? res.text, (k, v) => (k === 'link' ? undefined : v));
    assert.doesNotMatch(text, new RegExp(`${HIDDEN.family}|${HIDDEN.nhs}`), text.slice(0, 300));
    if (!allowId) assert.ok(!text.includes(ids.hidden), `the hidden id leaked: ${text.slice(0, 300)}`);
  }
  const idsOf = (bundle: { entry?: { resource: { id: string; resourceType: string } }[] }) => (bundle.entry ?? []).filter((e) => e.resource.resourceType !== 'OperationOutcome').map((e) => e.resource.id);

  describe('the custodian', () => {
    it('reads its own patients without any Consent', async () => {
      assert.equal((await gp.get(`/Patient/${ids.hidden}`)).status, 200);
      assert.equal((await gp.get(`/Patient?_total=accurate`)).body.total, 3);
    });
  });

  describe('read, vread and instance history: 403 for a hidden patient, 404 for none', () => {
    it('permits what a Consent permits', async () => {
      assert.equal((await hospital.get(`/Patient/${ids.open}`)).status, 200);
      assert.equal((await hospital.get(`/Patient/${ids.open}/_history/1`)).status, 200);
      assert.equal((await hospital.get(`/Patient/${ids.open}/_history`)).status, 200);
    });
    for (const [what, path] of [
      ['read', (id: string) => `/Patient/${id}`],
      ['vread', (id: string) => `/Patient/${id}/_history/1`],
      ['instance history', (id: string) => `/Patient/${id}/_history`],
    ] as const) {
      it(`${what} of a hidden patient is 403 forbidden, with the break-the-glass hint, and nothing of it`, async () => {
        const res = await hospital.get(path(ids.hidden));
        assert.equal(res.status, 403);
        assert.equal(res.body.issue[0].code, 'forbidden');
        const hint = res.body.issue.find((i: { code: string }) => i.code === 'suppressed');
        assert.ok(hint, 'the client is registered for BTG, so it is told it could break the glass');
        assert.equal(hint.details.coding[0].system, 'http://terminology.hl7.org/CodeSystem/v3-ActReason');
        noLeak(res, true);
        assert.equal((await hospital.get(path('no-such-patient'))).status, 404);
      });
    }
    it('a client that cannot break the glass gets no hint', async () => {
      const res = await research.get(`/Patient/${ids.hidden}`);
      assert.equal(res.status, 403);
      assert.ok(!res.body.issue.some((i: { code: string }) => i.code === 'suppressed'));
    });
  });

  describe('break the glass', () => {
    it('opens a hidden record for BTG, for every read path', async () => {
      assert.equal((await hospitalBtg.get(`/Patient/${ids.hidden}`)).status, 200);
      assert.equal((await hospitalBtg.get(`/Patient/${ids.hidden}/_history/1`)).status, 200);
      assert.ok(idsOf((await hospitalBtg.get(`/Patient?identifier=${NHS}|${HIDDEN.nhs}`)).body).includes(ids.hidden));
    });
    it('never for research', async () => {
      assert.equal((await research.get(`/Patient/${ids.hidden}`)).status, 403);
    });
  });

  describe('search, totals, counts and paging see only what the asker may see', () => {
    it('filters matches before paging and counting', async () => {
      const all = (await hospital.get('/Patient?_total=accurate')).body;
      assert.deepEqual(idsOf(all), [ids.open]);
      assert.equal(all.total, 1);
      noLeak({ status: 200, headers: {}, body: all, text: JSON.stringify(all) });
      const count = await hospital.get('/Patient?_summary=count');
      assert.equal(count.body.total, 1);
    });
    it('a search for the hidden patient\'s own details finds nothing and says nothing', async () => {
      for (const q of [`identifier=${NHS}|${HIDDEN.nhs}`, `family=${HIDDEN.family}`, `_id=${ids.hidden}`, `name=hidden`, 'gender=female']) {
        const res = await hospital.get(`/Patient?${q}&_total=accurate`);
        assert.equal(res.status, 200);
        assert.equal(res.body.total, 0, q);
        assert.equal(res.body.entry, undefined, q);
        noLeak(res, q.startsWith('_id'));
      }
    });
    it('pages stay full and the page count is that of the visible results', async () => {
      const seen: string[] = [];
      let res = await gp.get('/Patient?_count=1');
      for (;;) {
        seen.push(...idsOf(res.body));
        const next = res.body.link.find((l: { relation: string }) => l.relation === 'next');
        if (!next) break;
        res = await gp.get(next.url.replace('http://custodian.test/fhir', ''));
      }
      assert.equal(seen.length, 3, 'the custodian walks all three');
      const pages: string[][] = [];
      res = await hospital.get('/Patient?_count=1');
      for (;;) {
        pages.push(idsOf(res.body));
        noLeak(res);
        const next = res.body.link.find((l: { relation: string }) => l.relation === 'next');
        if (!next) break;
        res = await hospital.get(next.url.replace('http://custodian.test/fhir', ''));
      }
      assert.deepEqual(pages, [[ids.open]], 'one full page, no empty page hinting at hidden matches');
    });
    it('Consents of a hidden patient are hidden too; national services see them all', async () => {
      assert.equal((await hospital.get(`/Consent?patient=${ids.hidden}&_total=accurate`)).body.total, 0);
      const mine = (await hospital.get('/Consent?_total=accurate')).body;
      assert.deepEqual(idsOf(mine), [ids.openConsent], 'the Consent naming the hospital');
      assert.equal((await national.get('/Consent?_total=accurate')).body.total, 3);
      assert.equal((await national.get(`/Patient/${ids.hidden}`)).status, 403, 'national services get Consents, not records');
    });
  });

  describe('history at type and system level', () => {
    it('lists only visible versions', async () => {
      const type = await hospital.get('/Patient/_history?_count=100');
      assert.ok(type.body.entry.every((e: { fullUrl: string }) => e.fullUrl.endsWith(ids.open)));
      noLeak(type);
      const system = await hospital.get('/_history?_count=100');
      noLeak(system);
      assert.ok(system.body.entry.length >= 2);
    });
  });

  describe('national data opt-out', () => {
    it('refuses research even with a Consent permitting the researcher', async () => {
      const res = await research.get(`/Patient/${ids.optout}`);
      assert.equal(res.status, 403);
      assert.doesNotMatch(res.text, /opt-out|national|objection/, 'the 403 does not say the patient opted out');
      assert.equal((await research.get('/Patient?_total=accurate')).body.total, 0);
    });
  });

  describe('batch and transaction entries', () => {
    it('a batch GET of a hidden patient is a 403 entry without content', async () => {
      const res = await hospital.post('/', {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [{ request: { method: 'GET', url: `Patient/${ids.hidden}` } }, { request: { method: 'GET', url: `Patient/${ids.open}` } }, { request: { method: 'GET', url: `Patient?family=${HIDDEN.family}` } }],
      });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.entry.map((e: { response: { status: string } }) => e.response.status.slice(0, 3)), ['403', '200', '200']);
      assert.equal(res.body.entry[2].resource.total, 0);
      noLeak(res, true);
    });
    it('a transaction reading a hidden patient fails as a whole, and stores nothing', async () => {
      const before = (await gp.get('/Patient?_summary=count')).body.total;
      const res = await hospital.post('/', {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ resource: patient('Newbie', '9000000017'), request: { method: 'POST', url: 'Patient' } }, { request: { method: 'GET', url: `Patient/${ids.hidden}` } }],
      });
      assert.equal(res.status, 403);
      noLeak(res, true);
      assert.equal((await gp.get('/Patient?_summary=count')).body.total, before);
    });
  });

  describe('writes and conditional interactions neither reveal nor modify a hidden resource', () => {
    it('an update, patch or delete of a hidden patient is refused and changes nothing', async () => {
      const version = (await gp.get(`/Patient/${ids.hidden}`)).body.meta.versionId;
      assert.equal((await hospital.put(`/Patient/${ids.hidden}`, { ...patient('Overwritten', HIDDEN.nhs), id: ids.hidden })).status, 403);
      assert.equal((await hospital.patch(`/Patient/${ids.hidden}`, [{ op: 'replace', path: '/gender', value: 'male' }])).status, 403);
      assert.equal((await hospital.delete(`/Patient/${ids.hidden}`)).status, 403);
      assert.equal((await gp.get(`/Patient/${ids.hidden}`)).body.meta.versionId, version);
    });
    it('a deleted resource is brought back only by who could change its last version', async () => {
      // the custodian deletes a Patient and one of its Consents, then re-creates both with PUT
      const p = (await gp.post('/Patient', patient('Lazarus', '9000000017'))).body.id;
      const c = (await gp.post('/Consent', consentFor(p, { type: 'permit', actor: [{ role: { text: 'r' }, reference: org('HOSP1') }] }))).body;
      assert.equal((await gp.delete(`/Consent/${c.id}`)).status, 204);
      assert.equal((await gp.delete(`/Patient/${p}`)).status, 204);
      // another organisation cannot take the deleted Patient's id over, even naming itself custodian
      const taken = await hospital.put(`/Patient/${p}`, { ...patient('Lazarus', '9000000017'), id: p, managingOrganization: org('HOSP1') });
      assert.equal(taken.status, 403);
      assert.equal((await gp.get(`/Patient/${p}`)).status, 410);
      assert.equal((await gp.put(`/Patient/${p}`, { ...patient('Lazarus', '9000000017'), id: p })).status, 201);
      // (inactive, so the hospital sees no more than before for the tests that follow)
      assert.equal((await gp.put(`/Consent/${c.id}`, { ...c, meta: undefined, status: 'inactive' })).status, 201);
      assert.equal((await gp.get(`/Consent/${c.id}`)).body.meta.versionId, '3');
    });
    it('a visible patient of another custodian can be read but not changed', async () => {
      const res = await hospital.put(`/Patient/${ids.open}`, { ...patient('Openshaw', '9000000009'), id: ids.open, active: false });
      assert.equal(res.status, 403);
      assert.match(res.body.issue[0].diagnostics, /not-custodian/);
    });
    it('conditional create: a hidden match does not count (a new Patient is made, the hidden one is not revealed)', async () => {
      const res = await hospital.post('/Patient', patient('Hospitalcopy', '9000000025'), { 'If-None-Exist': `identifier=${NHS}|${HIDDEN.nhs}` });
      assert.equal(res.status, 201);
      assert.notEqual(res.body.id, ids.hidden);
      noLeak(res);
    });
    it('conditional update and delete cannot reach a hidden patient', async () => {
      const version = (await gp.get(`/Patient/${ids.hidden}`)).body.meta.versionId;
      const del = await hospital.delete(`/Patient?identifier=${NHS}|${HIDDEN.nhs}`);
      assert.equal(del.status, 200);
      assert.match(del.body.issue[0].diagnostics, /nothing was deleted/);
      const upd = await hospital.put(`/Patient?identifier=${NHS}|${HIDDEN.nhs}`, patient('Clobber', '9000000033'));
      assert.equal(upd.status, 201, 'no visible match: a new resource');
      assert.notEqual(upd.body.id, ids.hidden);
      assert.equal((await gp.get(`/Patient/${ids.hidden}`)).body.meta.versionId, version);
    });
    it('Consents are written by the custodian or the patient only', async () => {
      const res = await hospital.post('/Consent', consentFor(ids.open, { type: 'permit' }));
      assert.equal(res.status, 403, 'the hospital holds only read scopes for Consent');
      const stranger = await h.as('test-admin');
      const byOther = await stranger.post('/Consent', consentFor(ids.open, { type: 'permit' }));
      assert.equal(byOther.status, 403);
      assert.match(byOther.body.issue[0].diagnostics, /not-custodian/);
    });
    it('$validate of a hidden resource (mode=update) answers like a read: 403', async () => {
      const res = await hospital.post(`/Patient/${ids.hidden}/$validate?mode=update`, { ...patient('X', '9000000009'), id: ids.hidden });
      assert.equal(res.status, 403);
      noLeak(res, true);
    });
  });

  describe('AuditEvents', () => {
    let eventId: string;
    before(async () => {
      const event = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
      const entity = (event.entity as { what: { reference: string } }[]).find((e) => e.what.reference.startsWith('Patient/'))!;
      entity.what.reference = `Patient/${ids.hidden}`;
      delete event.id;
      const res = await audit.post('/AuditEvent', event);
      assert.equal(res.status, 201, res.text);
      eventId = res.body.id;
    });
    it('are posted only by audit sources', async () => {
      const event = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
      delete event.id;
      assert.equal((await h.api.post('/AuditEvent', event)).status, 201, 'test-admin has the audit-source role');
      const stranger = await h.as('hospital');
      assert.equal((await stranger.post('/AuditEvent', event)).status, 403, 'no AuditEvent.c scope');
      const noRole = await gp.post('/AuditEvent', event);
      assert.equal(noRole.status, 403);
    });
    it('are read by auditors and the custodian, not by others, whatever the Consents say', async () => {
      assert.equal((await auditor.get(`/AuditEvent/${eventId}`)).status, 200);
      assert.equal((await gp.get(`/AuditEvent/${eventId}`)).status, 200);
      assert.equal((await hospital.get(`/AuditEvent/${eventId}`)).status, 403);
      assert.equal((await hospital.get(`/AuditEvent?patient=${ids.hidden}&_total=accurate`)).body.total, 0);
      // The same through the patient-date index (one patient and a date: search/sql.ts referenceDateDriven).
      const byDate = `/AuditEvent?patient=${ids.hidden}&date=ge1900&_sort=-date&_count=1000`;
      const found = async (api: typeof hospital) => ((await api.get(byDate)).body.entry ?? []).map((e: { resource: { id: string } }) => e.resource.id);
      assert.deepEqual(await found(hospital), [], 'the hospital finds none of the hidden patient\'s events');
      assert.equal((await hospital.get(`${byDate}&_summary=count`)).body.total, 0);
      assert.ok((await found(auditor)).includes(eventId), 'the auditor finds the event');
      assert.ok((await found(gp)).includes(eventId), 'the custodian finds the event');
    });

    /** An audit source's event about these patients (BALP read, each in the patient role), posted by `by`. */
    const eventAbout = async (by: Api, ...patients: string[]): Promise<string> => {
      const event = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
      const entities = event.entity as { what: { reference?: string } }[];
      const template = entities.find((e) => e.what.reference?.startsWith('Patient/'))!;
      event.entity = [...entities.filter((e) => e !== template), ...patients.map((id) => ({ ...template, what: { reference: `Patient/${id}` } }))];
      delete event.id;
      const res = await by.post('/AuditEvent', event);
      assert.equal(res.status, 201, res.text);
      return res.body.id;
    };

    it('an event about a second patient stays hidden from the first one\'s custodian after the second is deleted', async () => {
      const gp2 = await h.as('gp2');
      const other = (await gp2.post('/Patient', patient('Rowntree', '9000000017', { managingOrganization: org('GP2') }))).body.id;
      const both = await eventAbout(await h.as('lab-audit', { purpose: 'HOPERAT' }), ids.open, other);
      const seenByGp = async () => ((await gp.get(`/AuditEvent?patient=${ids.open}&_count=1000`)).body.entry ?? []).map((e: { resource: { id: string } }) => e.resource.id);
      assert.equal((await gp.get(`/AuditEvent/${both}`)).status, 403, 'about a patient of GP2 as well');
      assert.equal((await gp2.delete(`/Patient/${other}`)).status, 204);
      assert.equal((await gp.get(`/AuditEvent/${both}`)).status, 403, 'a deleted patient is still someone else');
      assert.ok(!(await seenByGp()).includes(both));
      assert.equal((await gp2.get(`/AuditEvent/${both}`)).status, 403, 'a deleted patient has no custodian');
      assert.equal((await auditor.get(`/AuditEvent/${both}`)).status, 200);
    });

    it('the query and failure text of a request about several patients are for auditors: its custodian gets the request line', async () => {
      const gp2 = await h.as('gp2');
      const otherNhs = '9000000033';
      const other = (await gp2.post('/Patient', patient('Quaile', otherNhs, { managingOrganization: org('GP2') }))).body.id;
      // A search naming the open patient's NHS number and another custodian's patient's.
      const search = await hospital.get(`/Patient?identifier=${NHS}|9000000009,${NHS}|${otherNhs}`);
      assert.equal(search.status, 200);
      // A transaction reading both, refused for the other one: its text quotes that entry.
      const tx = await hospital.post('/', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'GET', url: `Patient/${ids.open}` } }, { request: { method: 'GET', url: `Patient/${other}` } }] });
      assert.equal(tx.status, 403, tx.text);
      const requestId = (res: ApiResponse) => res.headers['x-request-id'] as string;
      const events = async (api: Api) => {
        const bundle = (await api.get(`/AuditEvent?patient=${ids.open}&_count=1000`)).body as { entry?: { resource: Record<string, unknown> & { id: string } }[] };
        const of = (res: ApiResponse) => (bundle.entry ?? []).map((e) => e.resource).filter((r) => JSON.stringify(r).includes(requestId(res)));
        return { search: of(search), tx: of(tx) };
      };
      const byGp = await events(gp);
      assert.equal(byGp.search.length, 1, 'the custodian finds the search on its patient\'s trail');
      assert.ok(byGp.tx.length >= 1, 'and the transaction (its RESTful event, and the Consent decision\'s)');
      for (const e of [...byGp.search, ...byGp.tx]) {
        const text = JSON.stringify(e);
        assert.ok(!text.includes(otherNhs) && !text.includes(Buffer.from(otherNhs).toString('base64').slice(0, 8)), `another patient's NHS number: ${text}`);
        assert.ok(!text.includes(other), `another patient's id: ${text}`);
      }
      const query = (e: Record<string, unknown>) => (e.entity as { role?: { code: string }; description?: string; query?: string }[]).find((x) => x.role?.code === '24')!;
      assert.match(query(byGp.search[0]).description!, /^GET http\S+\/Patient$/);
      assert.equal(Buffer.from(query(byGp.search[0]).query!, 'base64').toString(), query(byGp.search[0]).description);
      const failed = byGp.tx.find((e) => e.outcomeDesc !== undefined)!;
      assert.equal(failed.outcomeDesc, 'the outcome concerns more than this patient (its details are for auditors)', 'a refusal that names the other patient');
      const subsetted = (e: Record<string, unknown>) => !!(e.meta as { tag?: { code: string }[] }).tag?.some((t) => t.code === 'SUBSETTED');
      assert.ok(subsetted(byGp.search[0]) && subsetted(failed), 'marked as not the whole event');
      // The same event read by id, and in the type's history.
      const read = (await gp.get(`/AuditEvent/${byGp.search[0].id}`)).body;
      assert.ok(!JSON.stringify(read).includes(otherNhs));
      const history = (await gp.get('/AuditEvent/_history?_count=1000')).body as { entry?: { resource?: { id: string } }[] };
      const inHistory = (history.entry ?? []).find((e) => e.resource?.id === byGp.search[0].id);
      if (inHistory) assert.ok(!JSON.stringify(inHistory).includes(otherNhs), 'history shows it as a read does');
      // Auditors get the whole request.
      const byAuditor = await events(auditor);
      assert.ok(query(byAuditor.search[0]).description!.includes(otherNhs));
      assert.ok(byAuditor.tx.some((e) => String(e.outcomeDesc).includes(other)));
      assert.ok(!JSON.stringify(byAuditor.search[0]).includes('SUBSETTED'));
    });

    it('an audit source\'s query entity with a description only is withheld from the custodian like the server\'s own', async () => {
      const otherNhs = '9000000041';
      // An audit source's event about the open patient with a query entity holding a description only.
      const source = await h.as('lab-audit', { purpose: 'HOPERAT' });
      const posted = await eventAbout(source, ids.open);
      const event = (await auditor.get(`/AuditEvent/${posted}`)).body as Record<string, unknown> & { entity: Record<string, unknown>[] };
      const withQuery = await source.post('/AuditEvent', {
        ...event,
        id: undefined,
        meta: undefined,
        entity: [...event.entity, { type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2' }, role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '24' }, description: `GET https://lab.example/fhir/Patient?identifier=${NHS}|${otherNhs}` }],
      });
      assert.equal(withQuery.status, 201, withQuery.text);
      const trail = JSON.stringify((await gp.get(`/AuditEvent?patient=${ids.open}&_count=1000`)).body);
      assert.ok(trail.includes(withQuery.body.id), 'and so is the audit source\'s event');
      assert.ok(!trail.includes(otherNhs), 'no other patient\'s NHS number reaches the custodian');
      assert.ok(!JSON.stringify((await gp.get(`/AuditEvent/${withQuery.body.id}`)).body).includes(otherNhs), 'by read either');
      assert.ok(JSON.stringify((await auditor.get(`/AuditEvent/${withQuery.body.id}`)).body).includes(otherNhs), 'an auditor reads it whole');
    });

    it('a count is on the trail of every patient it counted, as a search is', async () => {
      const counted = [
        await hospital.get(`/Patient?identifier=${NHS}|9000000009&_summary=count`),
        await hospital.get(`/Patient?identifier=${NHS}|9000000009&_total=accurate&_count=0`),
        await hospital.get(`/Patient?_id=${ids.open},${ids.hidden}&_summary=count`),
      ];
      for (const res of counted) assert.equal(res.body.total, 1, 'the hidden patient is not counted');
      const trail = JSON.stringify((await gp.get(`/AuditEvent?patient=${ids.open}&_count=1000`)).body);
      for (const res of counted) assert.ok(trail.includes(res.headers['x-request-id'] as string), 'the count is on the patient\'s trail');
      const hidden = JSON.stringify((await gp.get(`/AuditEvent?patient=${ids.hidden}&_count=1000`)).body);
      assert.ok(!hidden.includes(counted[2].headers['x-request-id'] as string), 'not on the trail of a patient it did not count');
      // A history count too: the open patient's versions are counted, the hidden one's are not.
      const history = await hospital.get('/Patient/_history?_summary=count');
      assert.equal(history.status, 200, history.text);
      const historyId = history.headers['x-request-id'] as string;
      assert.ok(JSON.stringify((await gp.get(`/AuditEvent?patient=${ids.open}&_count=1000`)).body).includes(historyId), 'the history count is on the trail');
      assert.ok(!JSON.stringify((await gp.get(`/AuditEvent?patient=${ids.hidden}&_count=1000`)).body).includes(historyId));
    });

    it('an audit source reading back its events cannot tell whether a Patient exists, existed or never did', async () => {
      const source = await h.as('lab-audit', { purpose: 'HOPERAT' });
      const gone = (await gp.post('/Patient', patient('Goneaway', '9000000025'))).body.id;
      assert.equal((await gp.delete(`/Patient/${gone}`)).status, 204);
      const answers: Record<string, [number, number]> = {};
      for (const [name, id] of [['exists', ids.hidden], ['deleted', gone], ['never existed', 'no-such-patient-4242']] as const) {
        const event = await eventAbout(source, id);
        const count = (await source.get(`/AuditEvent?entity=Patient/${id}&_summary=count`)).body.total as number;
        answers[name] = [(await source.get(`/AuditEvent/${event}`)).status, count];
      }
      assert.deepEqual(answers, { exists: [403, 0], deleted: [403, 0], 'never existed': [403, 0] });
      // Its own event about no patient is still its to read back.
      const event = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
      event.entity = (event.entity as { what: { reference?: string } }[]).filter((e) => !e.what.reference?.startsWith('Patient/'));
      delete event.id;
      const own = await source.post('/AuditEvent', event);
      assert.equal(own.status, 201, own.text);
      assert.equal((await source.get(`/AuditEvent/${own.body.id}`)).status, 200);
    });
  });

  describe('a Consent change is enforced on the very next request', () => {
    it('whatever X-Request-Id the client sends: the same one every time is no way to keep old facts', async () => {
      // Found by a second reading (stop 23): the decision cache checked for changes once per
      // request id, and the request id is the client's X-Request-Id.
      const id = (await gp.post('/Patient', patient('Sameidson', '9000000084'))).body.id as string;
      const c = (await gp.post('/Consent', consentFor(id, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }))).body;
      const same = { 'X-Request-Id': 'always-the-same' };
      assert.equal((await hospital.get(`/Patient/${id}`, same)).status, 200);
      assert.equal((await gp.put(`/Consent/${c.id}`, { ...c, status: 'inactive' })).status, 200);
      assert.equal((await hospital.get(`/Patient/${id}`, same)).status, 403);
    });

    it('withdrawn a moment ago: the next read, search and history are refused', async () => {
      const consent = (await gp.get(`/Consent/${ids.openConsent}`)).body;
      assert.equal((await hospital.get(`/Patient/${ids.open}`)).status, 200);
      assert.equal((await gp.put(`/Consent/${ids.openConsent}`, { ...consent, status: 'inactive' })).status, 200);
      assert.equal((await hospital.get(`/Patient/${ids.open}`)).status, 403);
      assert.equal((await hospital.get('/Patient?_total=accurate')).body.total, 0);
      assert.equal((await hospital.get(`/Patient/${ids.open}/_history`)).status, 403);
      assert.equal((await gp.put(`/Consent/${ids.openConsent}`, { ...consent, status: 'active' })).status, 200);
      assert.equal((await hospital.get(`/Patient/${ids.open}`)).status, 200, 'and given again, on the next request too');
      assert.equal((await gp.delete(`/Consent/${ids.openConsent}`)).status, 204);
      assert.equal((await hospital.get(`/Patient/${ids.open}`)).status, 403, 'a deleted Consent counts for nothing');
    });
  });

  describe('explaining decisions', () => {
    it('$access-decision tells the custodian what a client would get, and why', async () => {
      const res = await gp.get(`/Patient/${ids.optout}/$access-decision?client=research&purpose=HRESCH`);
      assert.equal(res.status, 200);
      const p = Object.fromEntries(res.body.parameter.map((x: { name: string; valueCode?: string; valueString?: string }) => [x.name, x.valueCode ?? x.valueString]));
      assert.equal(p.decision, 'deny');
      assert.equal(p.reason, 'national-opt-out');
      assert.match(p.rule, /Secondary use/);
      assert.ok(res.body.parameter.some((x: { name: string }) => x.name === 'consent'));
      const btg = await gp.get(`/Patient/${ids.hidden}/$access-decision?client=hospital&purpose=BTG`);
      assert.equal(btg.body.parameter.find((x: { name: string }) => x.name === 'reason').valueCode, 'break-the-glass');
    });
    it('$access-decision answers a client id the registry does not hold as it does one it holds: the registry cannot be listed', async () => {
      // Found by a second reading (stop 23): an unknown client id was a 400 "not registered".
      const known = await gp.get(`/Patient/${ids.hidden}/$access-decision?client=research&purpose=TREAT`);
      const unknown = await gp.get(`/Patient/${ids.hidden}/$access-decision?client=no-such-client&purpose=TREAT`);
      assert.deepEqual([known.status, unknown.status], [200, 200], unknown.text);
      const p = (res: typeof known) => Object.fromEntries(res.body.parameter.map((x: { name: string; valueCode?: string; valueString?: string; valueBoolean?: boolean }) => [x.name, x.valueCode ?? x.valueString ?? x.valueBoolean]));
      assert.deepEqual([p(unknown).decision, p(unknown).reason], [p(known).decision, p(known).reason]);
      assert.doesNotMatch(unknown.text, /not registered/);
    });

    it('$access-decision and $sharing-summary are not for others', async () => {
      const res = await hospital.get(`/Patient/${ids.hidden}/$access-decision?client=hospital&purpose=TREAT`);
      assert.equal(res.status, 403);
      noLeak(res, true);
      assert.equal((await hospital.get(`/Patient/${ids.hidden}/$sharing-summary`)).status, 403);
      assert.equal((await hospital.get(`/Patient/nobody/$sharing-summary`)).status, 403, 'and do not say whether the patient exists');
      assert.equal((await auditor.get(`/Patient/nobody/$sharing-summary`)).status, 404);
    });
    it('$sharing-summary lists the custodian, the Consents\' permissions and the opt-out', async () => {
      const res = await gp.get(`/Patient/${ids.optout}/$sharing-summary`);
      assert.equal(res.status, 200);
      const names = res.body.parameter.map((x: { name: string }) => x.name);
      assert.ok(names.includes('custodian') && names.includes('access') && names.includes('objection'));
      const access = res.body.parameter.filter((x: { name: string }) => x.name === 'access');
      const researchLine = access.find((a: { part: { name: string; valueReference?: { identifier?: { value: string } } }[] }) => a.part.some((p) => p.valueReference?.identifier?.value === 'RES1'));
      assert.ok(researchLine);
      assert.equal(res.body.parameter.find((x: { name: string }) => x.name === 'defaultPolicy').valueCode, 'deny');
    });
  });

  it('the CapabilityStatement states the default policy', async () => {
    const cs = (await h.anonymous.get('/metadata')).body;
    const ext = cs.rest[0].security.extension.find((e: { url: string }) => e.url.endsWith('consent-default-policy'));
    assert.equal(ext.valueCode, 'deny');
  });
  describe('earlier versions are judged as the record stands now', () => {
    // Found by a second reading (stop 23): a Patient's version was judged by its own
    // managingOrganization and labels, so vread and history kept an earlier version open to the
    // former custodian after a handover, and to anyone after the record was labelled restricted.
    it('after a handover, the former custodian no longer reads earlier versions; the new one reads them all', async () => {
      const id = (await gp.post('/Patient', patient('Handoverton', '9000000068'))).body.id as string;
      const handed = await gp.put(`/Patient/${id}`, { ...patient('Handoverton', '9000000068'), id, managingOrganization: org('HOSP1') });
      assert.equal(handed.status, 200, handed.text);
      assert.equal((await gp.get(`/Patient/${id}`)).status, 403);
      assert.equal((await gp.get(`/Patient/${id}/_history/1`)).status, 403, 'the version from before the handover');
      assert.equal((await gp.get(`/Patient/${id}/_history`)).status, 403);
      const history = (await gp.get('/Patient/_history?_count=1000')).body as { entry?: { fullUrl?: string; request?: { url: string } }[] };
      assert.ok(!JSON.stringify(history.entry ?? []).includes(id), 'nor in type history');
      assert.equal((await hospital.get(`/Patient/${id}/_history/1`)).status, 200, 'the new custodian reads the record it holds');
      assert.equal((await hospital.get(`/Patient/${id}/_history`)).body.entry.length, 2);
    });

    it('a deletion is shown to whoever may see the version it deleted, by vread as by history', async () => {
      // Found by a second reading (stop 23): vread judged a deletion by the newest version with
      // content, which may have come after it, and so told of a deletion history hides.
      const pid = (await gp.post('/Patient', patient('Deletionby', '9000000092'))).body.id as string;
      const id = (await gp.post('/Consent', consentFor(pid, { type: 'permit' }))).body.id as string;
      assert.equal((await hospital.get(`/Consent/${id}`)).status, 403, 'version 1 names no one the hospital is');
      assert.equal((await gp.delete(`/Consent/${id}`)).status, 204);
      const again = await gp.put(`/Consent/${id}`, { ...consentFor(pid, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }), id });
      assert.equal(again.status, 201, again.text);
      assert.equal((await hospital.get(`/Consent/${id}`)).status, 200, 'version 3 names it');
      assert.equal((await hospital.get(`/Consent/${id}/_history/2`)).status, 403, 'the deletion of a version it may not see');
      assert.equal((await gp.get(`/Consent/${id}/_history/2`)).status, 410, 'the custodian is told it is a deletion');
    });

    it('a label added later covers the earlier versions too', async () => {
      const id = (await gp.post('/Patient', patient('Labelham', '9000000076'))).body.id as string;
      const hosp = { role: { text: 'recipient' }, reference: org('HOSP1') };
      assert.equal((await gp.post('/Consent', consentFor(id, { type: 'permit', actor: [hosp] }))).status, 201);
      const R = { system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' };
      assert.equal((await gp.post('/Consent', consentFor(id, { type: 'deny', actor: [hosp], securityLabel: [R] }))).status, 201);
      assert.equal((await hospital.get(`/Patient/${id}/_history/1`)).status, 200, 'unlabelled, permitted');
      const labelled = await gp.put(`/Patient/${id}`, { ...patient('Labelham', '9000000076'), id, meta: { security: [R] } });
      assert.equal(labelled.status, 200, labelled.text);
      assert.equal((await hospital.get(`/Patient/${id}`)).status, 403);
      assert.equal((await hospital.get(`/Patient/${id}/_history/1`)).status, 403, 'the version from before the label');
      const history = (await hospital.get('/Patient/_history?_count=1000')).body as { entry?: unknown[] };
      assert.ok(!JSON.stringify(history.entry ?? []).includes(id));
      assert.equal((await gp.get(`/Patient/${id}/_history/1`)).status, 200, 'the custodian still reads it');
    });
  });

  describe('a Consent corrected to name another patient', () => {
    // Found by a second reading (stop 23): the decision cache dropped only the patients the new
    // version names, so the first patient kept the moved permit in every process that had read it.
    for (const how of ['PUT', 'PATCH'] as const) {
      it(`no longer counts for the first patient on the very next request (${how})`, async () => {
        const first = (await gp.post('/Patient', patient(`Movedfrom${how}`, how === 'PUT' ? '9000000017' : '9000000025'))).body.id as string;
        const second = (await gp.post('/Patient', patient(`Movedto${how}`, how === 'PUT' ? '9000000033' : '9000000041'))).body.id as string;
        const c = (await gp.post('/Consent', consentFor(first, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }))).body;
        // A Patient written after the Consent, so that the cache's next look at changes starts past the Consent's creation.
        assert.equal((await gp.put(`/Patient/${second}`, { ...patient(`Movedto${how}`, how === 'PUT' ? '9000000033' : '9000000041'), id: second, gender: 'other' })).status, 200);
        assert.equal((await hospital.get(`/Patient/${first}`)).status, 200, 'permitted, and now cached');
        assert.equal((await hospital.get(`/Patient/${second}`)).status, 403);
        const moved =
          how === 'PUT'
            ? await gp.put(`/Consent/${c.id}`, { ...c, patient: { reference: `Patient/${second}` } })
            : await gp.patch(`/Consent/${c.id}`, [{ op: 'replace', path: '/patient/reference', value: `Patient/${second}` }]);
        assert.equal(moved.status, 200, moved.text);
        assert.equal((await hospital.get(`/Patient/${first}`)).status, 403, 'the moved permit is gone from the first patient');
        assert.equal((await hospital.get(`/Patient/${second}`)).status, 200, 'and counts for the second');
        assert.ok(!idsOf((await hospital.get(`/Patient?_id=${first},${second}`)).body).includes(first));
      });
    }
  });
});

describe('Consent enforcement: a page of mostly hidden matches', () => {
  let h: Harness;
  let hospital: Api;
  const visible: string[] = [];

  before(async () => {
    h = await startHarness({ clients: [{ clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.rs'], purposes: ['TREAT'] }] });
    hospital = await h.as('hospital');
    // 150 patients of GP1; a Consent shares every tenth with the hospital.
    const gp = { clientId: 'gp', organization: 'https://fhir.nhs.uk/Id/ods-organization-code|GP1' };
    const patients = Array.from({ length: 150 }, (_, i) => ({ ...patient('Manyfold', NHS), id: `many-${String(i).padStart(3, '0')}` }));
    const shared = patients.filter((_, i) => i % 10 === 3).map((p) => p.id);
    const consents = shared.map((id) => ({ ...consentFor(id, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }), id: `share-${id}` }));
    visible.push(...shared);
    await h.store.transaction(async (tx) => {
      await tx.createMany('Patient', patients, gp);
      await tx.createMany('Consent', consents, gp);
    });
  });
  after(() => h.close());

  it('reads on past the hidden ones until each page is full: every visible match once, in order, and no more pages than they fill', async () => {
    for (const count of [1, 4, 15, 40]) {
      const pages: string[][] = [];
      let res = await hospital.get(`/Patient?family=Manyfold&_count=${count}&_total=accurate`);
      assert.equal(res.body.total, visible.length);
      for (;;) {
        assert.equal(res.status, 200);
        pages.push((res.body.entry ?? []).map((e: { resource: { id: string } }) => e.resource.id));
        const next = res.body.link.find((l: { relation: string }) => l.relation === 'next');
        if (!next) break;
        res = await hospital.get(next.url.replace('http://custodian.test/fhir', ''));
      }
      assert.deepEqual(pages.flat(), visible, `_count=${count}: the 15 shared patients, in order, each once`);
      assert.equal(pages.length, Math.ceil(visible.length / count), `_count=${count}: full pages`);
    }
  });

  it('batchSize: a page\'s worth and up to 64 more first, then what is still wanted at the visible share seen, between 50 and 2000 rows', () => {
    assert.equal(batchSize(21, 0, 0), 50, 'at least 50');
    assert.equal(batchSize(51, 0, 0), 102, 'a page of 50 (and one to say whether there is more) fills in one read with half its matches hidden');
    assert.equal(batchSize(1001, 0, 0), 1065, 'a page of 1000 reads 64 more, not 1000 more');
    assert.equal(batchSize(5000, 0, 0), 2000, 'at most 2000');
    assert.equal(batchSize(1001, 500, 1001), 1204, 'half were visible: twice the rest, and a fifth more');
    assert.equal(batchSize(51, 0, 50), 2000, 'none visible yet: as many as allowed');
    assert.equal(batchSize(101, 1, 2000), 2000);
  });

});
