import assert from 'node:assert/strict';
import { NHS_VALID, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

describe('Foundation: read, create, update, patch, delete', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  async function count(type = 'Patient'): Promise<number> {
    return (await h.api.get(`/${type}?_summary=count`)).body.total;
  }

  describe('create', () => {
    it('assigns an id and version 1, and answers 201 with Location, ETag and Last-Modified', async () => {
      const res = await h.api.post('/Patient', patient({ id: 'client-chosen' }));
      assert.equal(res.status, 201);
      assert.match(res.body.id, /^[0-9a-f-]{36}$/);
      assert.notEqual(res.body.id, 'client-chosen', 'a client id in a create is ignored');
      assert.equal(res.body.meta.versionId, '1');
      assert.equal(res.headers.etag, 'W/"1"');
      assert.equal(res.headers.location, `http://custodian.test/fhir/Patient/${res.body.id}/_history/1`);
      assert.ok(Date.parse(res.headers['last-modified']));
      assert.ok(Math.abs(Date.parse(res.body.meta.lastUpdated) - Date.now()) < 60000);
    });

    it('replaces client-supplied versionId and lastUpdated but keeps other meta', async () => {
      const res = await h.api.post('/Patient', patient({ meta: { versionId: '99', lastUpdated: '2001-01-01T00:00:00Z', tag: [{ system: 'urn:t', code: 'x' }] } }));
      assert.equal(res.status, 201);
      assert.equal(res.body.meta.versionId, '1');
      assert.notEqual(res.body.meta.lastUpdated, '2001-01-01T00:00:00Z');
      assert.deepEqual(res.body.meta.tag, [{ system: 'urn:t', code: 'x' }]);
    });

    it('honours Prefer: return=minimal and return=OperationOutcome', async () => {
      const minimal = await h.api.post('/Patient', patient(), { Prefer: 'return=minimal' });
      assert.equal(minimal.status, 201);
      assert.equal(minimal.text, '');
      assert.ok(minimal.headers.location);
      const oo = await h.api.post('/Patient', patient(), { Prefer: 'return=OperationOutcome' });
      assert.equal(oo.status, 201);
      assert.equal(oo.body.resourceType, 'OperationOutcome');
      assert.equal(oo.body.issue[0].severity, 'information');
    });

    it('rejects a POST with search parameters in the URL and stores nothing', async () => {
      const before = await count();
      const res = await h.api.post('/Patient?name=x', patient());
      assert.equal(res.status, 400);
      assert.equal(await count(), before);
    });
  });

  describe('read and vread', () => {
    let id: string;
    before(async () => {
      const identifier = [{ system: 'https://fhir.nhs.uk/Id/nhs-number', value: NHS_VALID }];
      id = (await h.api.post('/Patient', patient({ identifier }))).body.id;
      await h.api.put(`/Patient/${id}`, patient({ id, identifier, active: true }));
    });

    it('reads the current version with its ETag', async () => {
      const res = await h.api.get(`/Patient/${id}`);
      assert.equal(res.status, 200);
      assert.equal(res.body.meta.versionId, '2');
      assert.equal(res.body.active, true);
      assert.equal(res.headers.etag, 'W/"2"');
      assert.match(res.headers['content-type'], /^application\/fhir\+json/);
    });

    it('reads an earlier version with vread', async () => {
      const res = await h.api.get(`/Patient/${id}/_history/1`);
      assert.equal(res.status, 200);
      assert.equal(res.body.meta.versionId, '1');
      assert.equal(res.body.active, undefined);
    });

    it('answers 404 for an unknown id or version, and 400 for a malformed id', async () => {
      assert.equal((await h.api.get('/Patient/does-not-exist')).status, 404);
      assert.equal((await h.api.get(`/Patient/${id}/_history/9`)).status, 404);
      assert.equal((await h.api.get(`/Patient/${id}/_history/x`)).status, 404);
      const bad = await h.api.get('/Patient/bad_id!');
      assert.equal(bad.status, 400);
      assert.equal(bad.body.resourceType, 'OperationOutcome');
    });

    it('answers 304 to If-None-Match with the current ETag and to a later If-Modified-Since', async () => {
      assert.equal((await h.api.get(`/Patient/${id}`, { 'If-None-Match': 'W/"2"' })).status, 304);
      assert.equal((await h.api.get(`/Patient/${id}`, { 'If-None-Match': 'W/"1"' })).status, 200);
      const later = new Date(Date.now() + 60000).toUTCString();
      assert.equal((await h.api.get(`/Patient/${id}`, { 'If-Modified-Since': later })).status, 304);
      assert.equal((await h.api.get(`/Patient/${id}`, { 'If-Modified-Since': 'Mon, 01 Jan 2001 00:00:00 GMT' })).status, 200);
    });

    it('applies _summary and _elements and marks the result SUBSETTED', async () => {
      const summary = (await h.api.get(`/Patient/${id}?_summary=true`)).body;
      assert.ok(summary.identifier && summary.name);
      assert.ok(summary.meta.tag.some((t: { code: string }) => t.code === 'SUBSETTED'));
      const text = (await h.api.get(`/Patient/${id}?_summary=text`)).body;
      assert.deepEqual(Object.keys(text).sort(), ['id', 'meta', 'resourceType']);
      const data = (await h.api.get(`/Patient/${id}?_summary=data`)).body;
      assert.equal(data.text, undefined);
      assert.ok(data.name);
      const elements = (await h.api.get(`/Patient/${id}?_elements=identifier`)).body;
      assert.ok(elements.identifier);
      assert.equal(elements.name, undefined);
      assert.ok(elements.meta.tag.some((t: { code: string }) => t.code === 'SUBSETTED'));
      assert.equal((await h.api.get(`/Patient/${id}?_summary=maybe`)).status, 400);
    });
  });

  describe('update', () => {
    it('creates with the client id when the resource does not exist (201), then updates it (200)', async () => {
      const created = await h.api.put('/Patient/pat-a', patient({ id: 'pat-a' }));
      assert.equal(created.status, 201);
      assert.equal(created.body.id, 'pat-a');
      assert.equal(created.headers.location, 'http://custodian.test/fhir/Patient/pat-a/_history/1');
      const updated = await h.api.put('/Patient/pat-a', patient({ id: 'pat-a', gender: 'female' }));
      assert.equal(updated.status, 200);
      assert.equal(updated.body.meta.versionId, '2');
      assert.equal(updated.headers.etag, 'W/"2"');
    });

    it('refuses an id that does not match the URL, or no id, with 400', async () => {
      const mismatch = await h.api.put('/Patient/pat-a', patient({ id: 'pat-b' }));
      assert.equal(mismatch.status, 400);
      assert.deepEqual(mismatch.body.issue[0].expression, ['Patient.id']);
      assert.equal((await h.api.put('/Patient/pat-a', patient())).status, 400);
      assert.equal((await h.api.get('/Patient/pat-b')).status, 404);
    });

    it('checks If-Match: the current version succeeds, any other is a 412 and changes nothing', async () => {
      const current = (await h.api.get('/Patient/pat-a')).body.meta.versionId;
      const stale = await h.api.put('/Patient/pat-a', patient({ id: 'pat-a', gender: 'male' }), { 'If-Match': 'W/"1"' });
      assert.equal(stale.status, 412);
      assert.equal((await h.api.get('/Patient/pat-a')).body.meta.versionId, current);
      const fresh = await h.api.put('/Patient/pat-a', patient({ id: 'pat-a', gender: 'male' }), { 'If-Match': `W/"${current}"` });
      assert.equal(fresh.status, 200);
      assert.equal((await h.api.put('/Patient/pat-zz', patient({ id: 'pat-zz' }), { 'If-Match': 'W/"1"' })).status, 412);
      assert.equal((await h.api.put('/Patient/pat-a', patient({ id: 'pat-a' }), { 'If-Match': 'yesterday' })).status, 400);
    });

    it('answers 405 with an Allow header for updates, patches and deletes of AuditEvents', async () => {
      const put = await h.api.put('/AuditEvent/a1', { resourceType: 'AuditEvent', id: 'a1' });
      assert.equal(put.status, 405);
      assert.equal(put.body.issue[0].code, 'not-supported');
      assert.equal(put.headers.allow, 'GET');
      assert.equal((await h.api.patch('/AuditEvent/a1', [])).status, 405);
      assert.equal((await h.api.delete('/AuditEvent/a1')).status, 405);
    });
  });

  describe('patch (JSON Patch)', () => {
    let id: string;
    beforeEach(async () => {
      id = (await h.api.post('/Patient', patient({ active: false }))).body.id;
    });

    it('applies the patch as a new version', async () => {
      const res = await h.api.patch(`/Patient/${id}`, [
        { op: 'replace', path: '/active', value: true },
        { op: 'add', path: '/gender', value: 'other' },
      ]);
      assert.equal(res.status, 200);
      assert.equal(res.body.active, true);
      assert.equal(res.body.gender, 'other');
      assert.equal(res.body.meta.versionId, '2');
    });

    it('answers 422 when a test operation fails or a path is missing, and stores nothing', async () => {
      assert.equal((await h.api.patch(`/Patient/${id}`, [{ op: 'test', path: '/active', value: true }])).status, 422);
      assert.equal((await h.api.patch(`/Patient/${id}`, [{ op: 'replace', path: '/telecom/3/value', value: 'x' }])).status, 422);
      assert.equal((await h.api.get(`/Patient/${id}`)).body.meta.versionId, '1');
    });

    it('answers 400 for a malformed patch document, 415 for a non-patch content type', async () => {
      assert.equal((await h.api.patch(`/Patient/${id}`, { op: 'replace' })).status, 400);
      assert.equal((await h.api.patch(`/Patient/${id}`, [{ op: 'jump', path: '/active' }])).status, 400);
      assert.equal((await h.api.request('patch', `/Patient/${id}`, { body: [{ op: 'remove', path: '/active' }] })).status, 415);
    });

    it('refuses a patch that changes the id or makes the resource invalid', async () => {
      assert.equal((await h.api.patch(`/Patient/${id}`, [{ op: 'replace', path: '/id', value: 'other' }])).status, 422);
      const invalid = await h.api.patch(`/Patient/${id}`, [{ op: 'add', path: '/gender', value: 'robot' }]);
      assert.equal(invalid.status, 400);
      assert.deepEqual(invalid.body.issue[0].expression, ['Patient.gender']);
      assert.equal((await h.api.get(`/Patient/${id}`)).body.meta.versionId, '1');
    });

    it('checks If-Match and answers 404 for unknown resources', async () => {
      assert.equal((await h.api.request('patch', `/Patient/${id}`, { body: [], contentType: 'application/json-patch+json', headers: { 'If-Match': 'W/"7"' } })).status, 412);
      assert.equal((await h.api.patch('/Patient/nope', [])).status, 404);
    });
  });

  describe('delete', () => {
    it('deletes as a new version: read answers 410, older versions stay readable, delete again is a no-op', async () => {
      const id = (await h.api.post('/Patient', patient())).body.id;
      const del = await h.api.delete(`/Patient/${id}`);
      assert.equal(del.status, 204);
      assert.equal(del.headers.etag, 'W/"2"');
      const gone = await h.api.get(`/Patient/${id}`);
      assert.equal(gone.status, 410);
      assert.equal(gone.body.issue[0].code, 'deleted');
      assert.equal((await h.api.get(`/Patient/${id}/_history/1`)).status, 200);
      assert.equal((await h.api.get(`/Patient/${id}/_history/2`)).status, 410);
      assert.equal((await h.api.delete(`/Patient/${id}`)).status, 204);
      assert.equal((await h.api.get(`/Patient/${id}/_history`)).body.entry.length, 2);
      assert.equal((await h.api.get(`/Patient?_id=${id}`)).body.total, 0);
      // an update brings it back as the next version: created again, so 201 with its Location
      const back = await h.api.put(`/Patient/${id}`, patient({ id }));
      assert.equal(back.status, 201);
      assert.equal(back.body.meta.versionId, '3');
      assert.equal(back.headers.location, `${h.config.baseUrl}/Patient/${id}/_history/3`);
      assert.equal((await h.api.get(`/Patient/${id}`)).status, 200);
      // and an update of a live resource is still a 200
      assert.equal((await h.api.put(`/Patient/${id}`, patient({ id, active: true }))).status, 200);
    });

    it('answers 404 for an unknown resource and 200 with an OperationOutcome for Prefer: return=OperationOutcome', async () => {
      assert.equal((await h.api.delete('/Patient/never-was')).status, 404);
      const id = (await h.api.post('/Patient', patient())).body.id;
      const res = await h.api.delete(`/Patient/${id}`, { Prefer: 'return=OperationOutcome' });
      assert.equal(res.status, 200);
      assert.equal(res.body.resourceType, 'OperationOutcome');
    });
  });
});
