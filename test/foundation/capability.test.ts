import assert from 'node:assert/strict';
import type { CapabilityStatement, CapabilityStatementRestResource } from 'fhir/r4';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * The CapabilityStatement is checked against behaviour: everything it lists works, and what it
 * leaves out is refused.
 */
describe('Foundation: the CapabilityStatement says exactly what the server does', () => {
  let h: Harness;
  let cs: CapabilityStatement;
  const ALL = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'];
  before(async () => {
    h = await startHarness({ env: { CUSTODIAN_SUBSCRIPTION_ENDPOINTS: 'http://127.0.0.1:9/hooks' } });
    await h.api.put('/Patient/cap-p', patient({ id: 'cap-p' }));
    cs = (await h.api.get('/metadata')).body;
  });
  after(() => h.close());

  const resource = (type: string) => cs.rest![0].resource!.find((r) => r.type === type) as CapabilityStatementRestResource;

  it('is an R4 JSON server statement for Patient, Consent and AuditEvent, and Subscriptions to Consents', () => {
    assert.equal(cs.fhirVersion, '4.0.1');
    assert.deepEqual(cs.format, ['application/fhir+json', 'json']);
    assert.deepEqual(cs.patchFormat, ['application/json-patch+json']);
    assert.deepEqual(cs.rest![0].resource!.map((r) => r.type), ['Patient', 'Consent', 'AuditEvent', 'Subscription']);
    assert.deepEqual(cs.rest![0].interaction!.map((i) => i.code).sort(), ['batch', 'history-system', 'search-system', 'transaction']);
  });

  it('the system-level operations exist ($export), and an unlisted one is 404', async () => {
    assert.deepEqual(cs.rest![0].operation!.map((o) => o.name), ['export']);
    assert.equal((await h.api.get('/$export?_type=Patient', { Prefer: 'respond-async' })).status, 202);
    assert.equal((await h.api.get('/$not-an-operation')).status, 404);
    assert.equal((await h.api.get('/$verify')).status, 405, 'a type-level operation at system level');
  });

  it('Subscription: each listed interaction works and each unlisted one is a 405', async () => {
    const listed = new Set(resource('Subscription').interaction!.map((i) => i.code));
    assert.deepEqual([...listed].sort(), ['create', 'delete', 'read', 'search-type', 'update']);
    const body = { resourceType: 'Subscription', status: 'requested', reason: 'capability test', criteria: 'Consent?', channel: { type: 'rest-hook', endpoint: 'http://127.0.0.1:9/hooks/a' } };
    const created = await h.api.post('/Subscription', body);
    assert.equal(created.status, 201, created.text);
    const id = created.body.id;
    assert.equal((await h.api.get(`/Subscription/${id}`)).status, 200);
    assert.equal((await h.api.get(`/Subscription?_id=${id}`, { Prefer: 'handling=strict' })).body.total, 1);
    assert.equal((await h.api.get('/Subscription?status=active', { Prefer: 'handling=strict' })).status, 200);
    assert.equal((await h.api.put(`/Subscription/${id}`, { ...body, id, status: 'off' })).status, 200);
    assert.equal((await h.api.patch(`/Subscription/${id}`, [{ op: 'add', path: '/status', value: 'off' }])).status, 405);
    assert.equal((await h.api.get(`/Subscription/${id}/_history`)).status, 405);
    assert.equal((await h.api.get(`/Subscription/${id}/_history/1`)).status, 405);
    assert.equal((await h.api.get('/Subscription/_history')).status, 405);
    assert.equal((await h.api.delete(`/Subscription/${id}`)).status, 204);
    assert.equal((await h.api.get(`/Subscription/${id}`)).status, 404);
  });

  const samples: Record<string, () => Record<string, unknown>> = {
    Patient: () => patient() as unknown as Record<string, unknown>,
    Consent: () => consent('cap-p') as unknown as Record<string, unknown>,
    AuditEvent: () => ({
      resourceType: 'AuditEvent',
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
      recorded: '2024-01-01T00:00:00Z',
      agent: [{ requestor: true, who: { display: 'x' } }],
      source: { observer: { display: 'y' } },
    }),
  };

  for (const type of ['Patient', 'Consent', 'AuditEvent']) {
    it(`${type}: each listed interaction works and each unlisted one is a 405`, async () => {
      const listed = new Set<string>(resource(type).interaction!.map((i) => i.code));
      const created = await h.api.post(`/${type}`, samples[type]());
      assert.equal(created.status, listed.has('create') ? 201 : 405);
      const id = created.body.id;
      const body = { ...samples[type](), id };
      const probes: Record<string, () => Promise<number>> = {
        read: async () => (await h.api.get(`/${type}/${id}`)).status,
        vread: async () => (await h.api.get(`/${type}/${id}/_history/1`)).status,
        'search-type': async () => (await h.api.get(`/${type}?_id=${id}`)).status,
        'history-instance': async () => (await h.api.get(`/${type}/${id}/_history`)).status,
        'history-type': async () => (await h.api.get(`/${type}/_history`)).status,
        update: async () => (await h.api.put(`/${type}/${id}`, body)).status,
        patch: async () => (await h.api.patch(`/${type}/${id}`, [{ op: 'add', path: '/language', value: 'en' }])).status,
        delete: async () => (await h.api.delete(`/${type}/${id}`)).status,
      };
      for (const code of ALL.filter((c) => c !== 'create')) {
        const status = await probes[code]();
        if (listed.has(code)) assert.ok(status >= 200 && status < 300, `${type} ${code} is listed but answered ${status}`);
        else assert.equal(status, 405, `${type} ${code} is not listed but answered ${status}`);
      }
    });

    it(`${type}: every listed search parameter is applied, and an unlisted one is reported as ignored`, async () => {
      const params = resource(type).searchParam!;
      assert.ok(params.length > 5);
      const values: Record<string, string> = { string: 'a', token: 'x|y', date: 'ge2020-01-01', reference: 'Patient/1', uri: 'http://example.org' };
      for (const p of params) {
        const res = await h.api.get(`/${type}?${p.name}=${encodeURIComponent(values[p.type])}`, { Prefer: 'handling=strict' });
        assert.equal(res.status, 200, `${type}?${p.name} answered ${res.status}: ${JSON.stringify(res.body.issue ?? '')}`);
      }
      for (const unlisted of ['_text', '_content', 'not-a-param']) {
        assert.ok(!params.some((p) => p.name === unlisted));
        assert.equal((await h.api.get(`/${type}?${unlisted}=a`, { Prefer: 'handling=strict' })).status, 400, unlisted);
      }
    });

    it(`${type}: the listed operations exist, and unlisted ones are 404`, async () => {
      const listed = (resource(type).operation ?? []).map((o) => o.name);
      const invoke: Record<string, () => Promise<number>> = {
        validate: async () => (await h.api.post(`/${type}/$validate`, samples[type]())).status,
        'access-decision': async () => (await h.api.get(`/${type}/cap-p/$access-decision?client=test-admin`)).status,
        'sharing-summary': async () => (await h.api.get(`/${type}/cap-p/$sharing-summary`)).status,
        'access-report': async () => (await h.api.get(`/${type}/cap-p/$access-report`)).status,
        verify: async () => (await h.api.get(`/${type}/$verify`)).status,
        export: async () => (await h.api.get(`/${type}/$export`, { Prefer: 'respond-async' })).status,
        'delivery-status': async () => (await h.api.get(`/${type}/$delivery-status`)).status,
      };
      for (const name of listed) assert.ok([200, 202].includes(await invoke[name]()), `$${name}`);
      for (const name of Object.keys(invoke).filter((n) => !listed.includes(n))) assert.equal(await invoke[name](), 404, `$${name} is not listed for ${type}`);
    });
  }

  it('lists conditional read support as reads behave (If-None-Match, If-Modified-Since: 304 when current)', async () => {
    // http://hl7.org/fhir/R4/valueset-conditional-read-status.html
    const meaning: Record<string, string[]> = { 'not-supported': [], 'modified-since': ['If-Modified-Since'], 'not-match': ['If-None-Match'], 'full-support': ['If-Modified-Since', 'If-None-Match'] };
    for (const type of ['Patient', 'Consent', 'AuditEvent']) {
      const created = await h.api.post(`/${type}`, samples[type]());
      assert.equal(created.status, 201);
      const url = `/${type}/${created.body.id}`;
      const future = new Date(Date.now() + 3600_000).toUTCString();
      const behaves: string[] = [];
      if ((await h.api.get(url, { 'If-Modified-Since': future })).status === 304) behaves.push('If-Modified-Since');
      if ((await h.api.get(url, { 'If-None-Match': created.headers.etag })).status === 304) behaves.push('If-None-Match');
      assert.deepEqual(behaves, meaning[resource(type).conditionalRead!], `${type}: listed ${resource(type).conditionalRead}`);
      // and a stale copy is answered in full
      assert.equal((await h.api.get(url, { 'If-Modified-Since': 'Sat, 01 Jan 2000 00:00:00 GMT' })).status, 200);
      assert.equal((await h.api.get(url, { 'If-None-Match': 'W/"999"' })).status, 200);
    }
  });

  it('lists the profile each patient-data type is held to, and the profile exists in profiles/', () => {
    for (const r of cs.rest![0].resource!.filter((x) => x.type !== 'Subscription')) assert.match(r.profile!, /StructureDefinition\/custodian-/);
  });
});
