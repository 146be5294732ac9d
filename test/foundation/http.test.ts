import assert from 'node:assert/strict';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

describe('Foundation: HTTP semantics', () => {
  let h: Harness;
  let id: string;
  before(async () => {
    h = await startHarness();
    id = (await h.api.post('/Patient', patient())).body.id;
  });
  after(() => h.close());

  describe('content negotiation', () => {
    it('answers application/fhir+json by default and application/json when that is what was asked for', async () => {
      assert.match((await h.api.get(`/Patient/${id}`)).headers['content-type'], /^application\/fhir\+json; charset=utf-8/);
      assert.match((await h.api.get(`/Patient/${id}`, { Accept: 'application/json' })).headers['content-type'], /^application\/json/);
      assert.match((await h.api.get(`/Patient/${id}`, { Accept: 'application/fhir+json; fhirVersion=4.0' })).headers['content-type'], /^application\/fhir\+json/);
      assert.match((await h.api.get(`/Patient/${id}`, { Accept: 'text/html, */*;q=0.1' })).headers['content-type'], /^application\/fhir\+json/);
    });

    it('answers 406 with an OperationOutcome for XML, Turtle or another FHIR version', async () => {
      for (const accept of ['application/fhir+xml', 'application/xml', 'text/turtle', 'application/fhir+json; fhirVersion=3.0']) {
        const res = await h.api.get(`/Patient/${id}`, { Accept: accept });
        assert.equal(res.status, 406, accept);
        assert.equal(res.body.resourceType, 'OperationOutcome');
      }
    });

    it('lets _format override Accept', async () => {
      assert.equal((await h.api.get(`/Patient/${id}?_format=json`, { Accept: 'application/fhir+xml' })).status, 200);
      assert.match((await h.api.get(`/Patient/${id}?_format=application/json`)).headers['content-type'], /^application\/json/);
      // json and application/json answer application/json; fhir+json and application/fhir+json answer application/fhir+json
      const formats: [string, RegExp][] = [
        ['json', /^application\/json;/],
        ['application/json', /^application\/json;/],
        ['fhir%2Bjson', /^application\/fhir\+json;/],
        ['fhir+json', /^application\/fhir\+json;/],
        ['application/fhir%2Bjson', /^application\/fhir\+json;/],
        ['application/json%2Bfhir', /^application\/fhir\+json;/],
      ];
      for (const [format, type] of formats) {
        const res = await h.api.get(`/Patient/${id}?_format=${format}`, { Accept: 'application/fhir+json' });
        assert.equal(res.status, 200, format);
        assert.match(res.headers['content-type'], type, format);
      }
      assert.equal((await h.api.get(`/Patient/${id}?_format=application/fhir%2Bxml`)).status, 406);
      assert.equal((await h.api.get(`/Patient/${id}?_format=xml`)).status, 406);
      assert.equal((await h.api.get(`/Patient/${id}?_format=text/turtle`)).status, 406);
    });

    it('pretty-prints with _pretty=true', async () => {
      const res = await h.api.get(`/Patient/${id}?_pretty=true`);
      assert.match(res.text, /^\{\n {2}"resourceType": "Patient"/);
      assert.doesNotMatch((await h.api.get(`/Patient/${id}`)).text, /\n/);
    });

    it('accepts application/json request bodies and refuses other charsets', async () => {
      assert.equal((await h.api.request('post', '/Patient', { body: patient(), contentType: 'application/json' })).status, 201);
      assert.equal((await h.api.request('post', '/Patient', { body: patient(), contentType: 'application/fhir+json; charset=iso-8859-1' })).status, 415);
      assert.equal((await h.api.request('post', '/Patient', { body: JSON.stringify(patient()), raw: true, contentType: 'text/plain' })).status, 415);
    });
  });

  describe('request ids', () => {
    it('echoes a sane X-Request-Id and generates one otherwise', async () => {
      assert.equal((await h.api.get('/metadata', { 'X-Request-Id': 'abc-123' })).headers['x-request-id'], 'abc-123');
      assert.match((await h.api.get('/metadata', { 'X-Request-Id': 'bad id <script>' })).headers['x-request-id'], /^[0-9a-f-]{36}$/);
      assert.match((await h.api.get('/metadata')).headers['x-request-id'], /^[0-9a-f-]{36}$/);
    });
  });

  describe('errors', () => {
    it('answers unknown routes with 404, unknown types with 404 not-supported, wrong methods with 405 and Allow', async () => {
      const route = await h.api.get(`/Patient/${id}/nonsense`);
      assert.equal(route.status, 404);
      const type = await h.api.get('/Observation/1');
      assert.equal(type.status, 404);
      assert.equal(type.body.issue[0].code, 'not-supported');
      const method = await h.api.post(`/Patient/${id}`, patient());
      assert.equal(method.status, 405);
      assert.equal(method.headers.allow, 'GET, PUT, PATCH, DELETE');
      assert.equal((await h.api.request('patch', '/Patient', { body: [], contentType: 'application/json-patch+json' })).status, 405);
      assert.equal((await h.api.request('put', '/', { body: {} })).status, 405);
    });

    it('never leaks stack traces or SQL', async () => {
      const res = await h.api.request('post', '/Patient', { body: '{"resourceType":"Patient","name":[{"family":', raw: true });
      assert.doesNotMatch(res.text, /at .*\.js:\d+|SELECT|INSERT|sqlite|sequelize/i);
    });
  });
});
