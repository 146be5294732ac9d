import assert from 'node:assert/strict';
import type { Bundle } from 'fhir/r4';
import { consent, loadJson, NHS_INVALID, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

describe('Foundation: batch and transaction', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ env: { CUSTODIAN_MAX_BUNDLE_ENTRIES: '10' } });
  });
  after(() => h.close());

  const count = async (type: string) => (await h.api.get(`/${type}?_summary=count`)).body.total as number;

  function patientWithConsents(invalidConsent = false): Bundle {
    const pid = 'urn:uuid:3f1b8c2e-0d7a-4b55-9a53-1c7e6b0c9d01';
    const consentFor = (n: number) => {
      const c = consent('x') as unknown as Record<string, unknown>;
      c.patient = { reference: pid };
      c.identifier = [{ system: 'urn:test:consent', value: `tx-${n}` }];
      if (invalidConsent && n === 2) c.status = 'pending-ish';
      return { fullUrl: `urn:uuid:00000000-0000-4000-8000-00000000000${n}`, resource: c, request: { method: 'POST', url: 'Consent' } };
    };
    return {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [consentFor(1), { fullUrl: pid, resource: patient({ text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml"><a href="${pid}">me</a></div>` } }), request: { method: 'POST', url: 'Patient' } }, consentFor(2)],
    } as Bundle;
  }

  it('commits a Patient and the Consents that reference it by urn:uuid, rewriting the references', async () => {
    const res = await h.api.post('/', patientWithConsents());
    assert.equal(res.status, 200);
    assert.equal(res.body.type, 'transaction-response');
    assert.deepEqual(res.body.entry.map((e: { response: { status: string } }) => e.response.status), ['201 Created', '201 Created', '201 Created']);
    const patientId = res.body.entry[1].resource.id;
    assert.match(res.body.entry[1].response.location, new RegExp(`^Patient/${patientId}/_history/1$`));
    for (const i of [0, 2]) assert.equal(res.body.entry[i].resource.patient.reference, `Patient/${patientId}`);
    assert.match(res.body.entry[1].resource.text.div, new RegExp(`href="Patient/${patientId}"`));
    const consents = (await h.api.get(`/Consent?patient=${patientId}`)).body;
    assert.equal(consents.total, 2);
  });

  it('stores nothing when one entry is invalid, and answers with that entry\'s OperationOutcome', async () => {
    const [patients, consents] = [await count('Patient'), await count('Consent')];
    const res = await h.api.post('/', patientWithConsents(true));
    assert.equal(res.status, 400);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.match(res.body.issue[0].diagnostics, /^Entry 2 \(POST Consent\)/);
    assert.deepEqual(res.body.issue[0].expression, ['Bundle.entry[2].resource.status']);
    assert.equal(await count('Patient'), patients);
    assert.equal(await count('Consent'), consents);
  });

  it('rolls back on a profile failure (422) and on a failed precondition (412) too', async () => {
    const patients = await count('Patient');
    const bad = await h.api.post('/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: patient(), request: { method: 'POST', url: 'Patient' } },
        { resource: patient({ identifier: [{ system: 'https://fhir.nhs.uk/Id/nhs-number', value: NHS_INVALID }] }), request: { method: 'POST', url: 'Patient' } },
      ],
    });
    assert.equal(bad.status, 422);
    const id = (await h.api.post('/Patient', patient())).body.id;
    const stale = await h.api.post('/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: patient(), request: { method: 'POST', url: 'Patient' } },
        { resource: patient({ id }), request: { method: 'PUT', url: `Patient/${id}`, ifMatch: 'W/"5"' } },
      ],
    });
    assert.equal(stale.status, 412);
    assert.equal(await count('Patient'), patients + 1);
  });

  it('processes DELETE, POST, PUT/PATCH, GET in that order and answers in request order', async () => {
    const doomed = (await h.api.post('/Patient', patient({ identifier: [{ system: 'urn:test:order', value: 'doomed' }] }))).body.id;
    const patched = (await h.api.post('/Patient', patient({ active: false }))).body.id;
    const patch = Buffer.from(JSON.stringify([{ op: 'replace', path: '/active', value: true }])).toString('base64');
    const res = await h.api.post('/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'GET', url: `Patient?identifier=urn:test:order|doomed` } },
        { resource: patient({ id: 'order-put' }), request: { method: 'PUT', url: 'Patient/order-put' } },
        { resource: patient({ identifier: [{ system: 'urn:test:order', value: 'new' }] }), request: { method: 'POST', url: 'Patient' } },
        { resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: patch }, request: { method: 'PATCH', url: `Patient/${patched}` } },
        { request: { method: 'DELETE', url: `Patient/${doomed}` } },
      ],
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const statuses = res.body.entry.map((e: { response: { status: string } }) => e.response.status);
    assert.deepEqual(statuses, ['200 OK', '201 Created', '201 Created', '200 OK', '204 No Content']);
    assert.equal(res.body.entry[0].resource.total, 0, 'the GET ran after the DELETE');
    assert.equal(res.body.entry[3].resource.active, true);
  });

  it('resolves If-None-Exist and conditional references inside a transaction', async () => {
    const existing = (await h.api.post('/Patient', patient({ identifier: [{ system: 'urn:test:cond', value: 'p1' }] }))).body.id;
    const c = consent('x') as unknown as Record<string, unknown>;
    c.patient = { reference: 'Patient?identifier=urn:test:cond|p1' };
    const res = await h.api.post('/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:11111111-1111-4111-8111-111111111111', resource: patient({ identifier: [{ system: 'urn:test:cond', value: 'p1' }] }), request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=urn:test:cond|p1' } },
        { resource: c, request: { method: 'POST', url: 'Consent' } },
      ],
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.entry[0].response.status, '200 OK');
    assert.equal(res.body.entry[0].resource.id, existing);
    assert.equal(res.body.entry[1].resource.patient.reference, `Patient/${existing}`);
    c.patient = { reference: 'Patient?identifier=urn:test:cond|nobody' };
    const none = await h.api.post('/', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: c, request: { method: 'POST', url: 'Consent' } }] });
    assert.equal(none.status, 412);
  });

  it('refuses a transaction that acts twice on one resource', async () => {
    const res = await h.api.post('/', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: patient({ id: 'twice' }), request: { method: 'PUT', url: 'Patient/twice' } },
        { request: { method: 'DELETE', url: 'Patient/twice' } },
      ],
    });
    assert.equal(res.status, 400);
  });

  it('runs batch entries independently, each with its own response', async () => {
    const res = await h.api.post('/', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { resource: patient(), request: { method: 'POST', url: 'Patient' } },
        { resource: patient({ gender: 'robot' }), request: { method: 'POST', url: 'Patient' } },
        { request: { method: 'GET', url: 'Patient/does-not-exist' } },
        { request: { method: 'GET', url: 'Observation/1' } },
        { resource: { resourceType: 'AuditEvent', id: 'a' }, request: { method: 'PUT', url: 'AuditEvent/a' } },
        { request: { method: 'GET', url: 'Patient?_count=1' } },
      ],
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.type, 'batch-response');
    const statuses = res.body.entry.map((e: { response: { status: string } }) => e.response.status.split(' ')[0]);
    assert.deepEqual(statuses, ['201', '400', '404', '404', '405', '200']);
    assert.equal(res.body.entry[1].response.outcome.resourceType, 'OperationOutcome');
    const created = res.body.entry[0].resource.id;
    assert.equal((await h.api.get(`/Patient/${created}`)).status, 200, 'the good entry was kept');
  });

  it('refuses Bundles over the entry limit (413), of the wrong type, or without request urls (400)', async () => {
    const many = { resourceType: 'Bundle', type: 'batch', entry: Array.from({ length: 11 }, () => ({ request: { method: 'GET', url: 'Patient' } })) };
    const tooMany = await h.api.post('/', many);
    assert.equal(tooMany.status, 413);
    assert.equal((await h.api.post('/', { resourceType: 'Bundle', type: 'collection' })).status, 400);
    const noRequest = await h.api.post('/', { resourceType: 'Bundle', type: 'batch', entry: [{ resource: patient() }] });
    assert.equal(noRequest.status, 200, 'in a batch a malformed entry fails alone');
    assert.equal(noRequest.body.entry[0].response.status, '400 Bad Request');
    assert.equal((await h.api.post('/', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: patient() }] })).status, 400);
    assert.equal((await h.api.post('/', patient())).status, 400);
    assert.equal((await h.api.post('/', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'FETCH', url: 'Patient' } }] })).status, 400);
  });

  it('runs the spec\'s transaction example shape (Bundle-bundle-transaction) for the entries we serve', async () => {
    const example = loadJson<Bundle>('r4', 'examples', 'misc', 'Bundle-bundle-transaction.json');
    const ours = (example.entry ?? []).filter((e) => /^(Patient)(\/|\?|$)/.test(e.request?.url ?? ''));
    assert.ok(ours.length >= 3, 'the example has Patient entries');
    // Entries that name specific existing resources or versions are made to exist first.
    for (const e of ours) {
      const m = /^Patient\/([^/?]+)/.exec(e.request!.url);
      if (m && e.request!.method !== 'POST') await h.api.put(`/Patient/${m[1]}`, patient({ id: m[1] }));
    }
    const cleaned = ours.map((e) => {
      const copy = structuredClone(e);
      delete copy.request!.ifMatch;
      delete copy.request!.ifNoneMatch;
      delete copy.request!.ifModifiedSince;
      if (copy.request!.ifNoneExist) copy.request!.ifNoneExist = 'identifier=urn:test:none|none';
      if (copy.request!.method === 'PUT' && copy.request!.url.includes('?')) copy.request!.url = 'Patient?identifier=urn:test:none|nobody';
      if (copy.request!.method === 'DELETE' && copy.request!.url.includes('?')) copy.request!.url = 'Patient?identifier=urn:test:none|nobody';
      return copy;
    });
    const res = await h.api.post('/', { resourceType: 'Bundle', type: 'transaction', entry: cleaned });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 800));
    assert.equal(res.body.entry.length, cleaned.length);
  });
});
