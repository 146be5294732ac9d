import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import supertest from 'supertest';
import { openAccessPolicy, type AccessPolicy } from '../../server/gate/policy';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * A client's mistake is a 4xx OperationOutcome, never a 500 (DESIGN.md invariant 6). Each case
 * here was a 500 (several only on PostgreSQL, where text cannot hold U+0000); the suite runs on
 * both databases.
 */
describe('Foundation: client mistakes are 4xx, never 500', () => {
  let h: Harness;
  // One Patient whose reads fail inside the policy with a plain error: a server fault in one batch entry.
  const faulty: AccessPolicy = {
    ...openAccessPolicy,
    async canRead(ctx, versions, purpose, view) {
      if (versions.some((v) => v.id === 'boom')) throw new TypeError("Cannot read properties of undefined (reading 'x')");
      return openAccessPolicy.canRead(ctx, versions, purpose, view);
    },
  };
  before(async () => {
    h = await startHarness({ policy: faulty });
    assert.equal((await h.api.put('/Patient/rb-p', patient({ id: 'rb-p', identifier: [{ system: 'http://example.org/mrn', value: 'rb-1' }] }))).status, 201);
    assert.equal((await h.api.put('/Patient/boom', patient({ id: 'boom' }))).status, 201);
  });
  after(() => h.close());

  const count = async (type: string) => (await h.api.get(`/${type}?_summary=count`)).body.total as number;
  const assert400 = (res: { status: number; body: { resourceType?: string; issue?: { diagnostics?: string }[] } }, what: string, pattern?: RegExp) => {
    assert.equal(res.status, 400, `${what}: ${JSON.stringify(res.body).slice(0, 300)}`);
    assert.equal(res.body.resourceType, 'OperationOutcome', what);
    if (pattern) assert.match(res.body.issue![0].diagnostics!, pattern, what);
    const strings: string[] = [];
    JSON.stringify(res.body, (_k, v: unknown) => (typeof v === 'string' && strings.push(v), v));
    assert.ok(!strings.some((t) => t.includes('\u0000')), `${what}: the outcome does not echo U+0000`);
  };

  describe('U+0000 and other control characters', () => {
    it('in a resource string (create, update, patch, $validate)', async () => {
      const before = await count('Patient');
      assert400(await h.api.post('/Patient', patient({ name: [{ family: 'a\u0000b' }] })), 'create', /U\+0000/);
      assert400(await h.api.put('/Patient/rb-p', patient({ id: 'rb-p', name: [{ family: 'a\u0000b' }] })), 'update');
      assert400(await h.api.patch('/Patient/rb-p', [{ op: 'add', path: '/gender', value: 'male\u0000' }]), 'patch');
      assert.equal(await count('Patient'), before);
      const validated = await h.api.post('/Patient/$validate', patient({ name: [{ family: 'a\u0000b' }] }));
      assert.equal(validated.status, 200);
      assert.ok(validated.body.issue.some((i: { expression?: string[] }) => i.expression?.[0] === 'Patient.name[0].family'));
    });

    it('in a search value, an _id, a parameter name, a path segment', async () => {
      assert400(await h.api.get('/Patient?name=a%00b'), 'string search');
      assert400(await h.api.get('/Patient?_id=a%00b'), '_id');
      assert400(await h.api.get('/Patient?identifier=http://x%7Ca%00'), 'token search');
      assert400(await h.api.get('/Patient?na%00me=a'), 'parameter name');
      assert400(await h.api.get('/Patient/a%00b'), 'read');
      assert400(await h.api.get('/Patient/rb-p/_history/%00'), 'vread');
      assert400(await h.api.get('/Patient/_history?_since=2020-01-01T00:00:00Z%00'), 'history');
      assert400(await h.api.request('post', '/Patient/_search', { body: 'name=a%00b', raw: true, contentType: 'application/x-www-form-urlencoded' }), 'POST _search');
    });

    it('in conditional criteria: If-None-Exist, conditional update and delete, and a transaction', async () => {
      const before = await count('Patient');
      assert400(await h.api.post('/Patient', patient(), { 'If-None-Exist': 'identifier=a%00b' }), 'If-None-Exist');
      assert400(await h.api.put('/Patient?identifier=a%00b', patient()), 'conditional update');
      assert400(await h.api.delete('/Patient?identifier=a%00b'), 'conditional delete');
      const tx = (reference: string) => ({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ request: { method: 'POST', url: 'Consent' }, resource: consent('rb-p', { patient: { reference } }) }],
      });
      assert400(await h.api.post('/', tx('Patient?identifier=a%00b')), 'encoded conditional reference');
      assert400(await h.api.post('/', tx('Patient?identifier=a\u0000b')), 'raw conditional reference');
      const entry = (request: Record<string, unknown>) => ({ resourceType: 'Bundle', type: 'transaction', entry: [{ request, resource: patient() }] });
      assert400(await h.api.post('/', entry({ method: 'POST', url: 'Patient', ifNoneExist: 'identifier=a%00b' })), 'entry ifNoneExist');
      assert400(await h.api.post('/', entry({ method: 'PUT', url: 'Patient?identifier=a%00b' })), 'entry url');
      assert.equal(await count('Patient'), before);
    });
  });

  describe('request bodies', () => {
    it('gzip and deflate bodies that are not what Content-Encoding says: 400; unknown encodings: 415', async () => {
      const body = JSON.stringify(patient());
      // Raw bytes as sent (the Api helper would serialise a Buffer as JSON).
      const send = async (encoding: string, data: Buffer | string) => {
        const res = await supertest(h.app.express)
          .post('/Patient')
          .set('Authorization', `Bearer ${await h.token('test-admin')}`)
          .set('Content-Type', 'application/fhir+json')
          .set('Content-Encoding', encoding)
          .serialize((d: unknown) => d as string)
          .send(data as unknown as string);
        return { status: res.status, body: JSON.parse(res.text) as { resourceType?: string; issue?: { diagnostics?: string }[] } };
      };
      assert.equal((await send('gzip', zlib.gzipSync(body))).status, 201, 'real gzip is read');
      assert.equal((await send('deflate', zlib.deflateSync(body))).status, 201, 'real deflate is read');
      assert400(await send('gzip', body), 'gzip', /Content-Encoding/);
      assert400(await send('deflate', body), 'deflate');
      assert400(await send('br', body), 'br');
      assert400(await send('gzip', zlib.gzipSync(body).subarray(0, 20)), 'truncated gzip');
      const unknown = await send('compress', body);
      assert.equal(unknown.status, 415);
      assert.equal(unknown.body.resourceType, 'OperationOutcome');
    });

    it('a URL path that is not valid percent-encoding', async () => {
      for (const path of ['/Patient/%E0%A4%A', '/Patient/%', '/%', '/Patient/rb-p/_history/%ZZ']) assert400(await h.api.get(path), path);
    });
  });

  describe('batch entries', () => {
    const batch = (...entries: unknown[]) => h.api.post('/', { resourceType: 'Bundle', type: 'batch', entry: entries });
    const statuses = (res: { body: { entry: { response: { status: string } }[] } }) => res.body.entry.map((e) => e.response.status.split(' ')[0]);
    const good = { request: { method: 'GET', url: 'Patient/rb-p' } };

    it('a request field of the wrong type fails its own entry with 400, and the others still run', async () => {
      const cases: [string, Record<string, unknown>][] = [
        ['ifNoneMatch: 5', { method: 'GET', url: 'Patient/rb-p', ifNoneMatch: 5 }],
        ['ifModifiedSince: 5', { method: 'GET', url: 'Patient/rb-p', ifModifiedSince: 5 }],
        ['ifModifiedSince: not an instant', { method: 'GET', url: 'Patient/rb-p', ifModifiedSince: 'yesterday' }],
        ['ifMatch: {}', { method: 'PUT', url: 'Patient/rb-p', ifMatch: {} }],
        ['ifMatch: not an ETag', { method: 'PUT', url: 'Patient/rb-p', ifMatch: 'abc' }],
        ['ifNoneExist: []', { method: 'POST', url: 'Patient', ifNoneExist: ['identifier=x'] }],
        ['method: 5', { method: 5, url: 'Patient/rb-p' }],
        ['url: {}', { method: 'GET', url: {} }],
      ];
      for (const [title, request] of cases) {
        const res = await batch({ request, resource: patient({ id: 'rb-p' }) }, good);
        assert.equal(res.status, 200, title);
        assert.deepEqual(statuses(res), ['400', '200'], `${title}: ${JSON.stringify(res.body.entry[0].response)}`);
        assert.ok(res.body.entry[0].response.outcome.issue[0].expression[0].startsWith('Bundle.entry[0].'), title);
      }
      for (const entry of [5, [], { request: [] }, { request: good.request, fullUrl: 5 }]) {
        assert.deepEqual(statuses(await batch(entry, good)), ['400', '200'], JSON.stringify(entry));
      }
    });

    it('ifNoneMatch and ifModifiedSince answer 304 as the HTTP headers do', async () => {
      const res = await batch(
        { request: { method: 'GET', url: 'Patient/rb-p', ifNoneMatch: 'W/"1"' } },
        { request: { method: 'GET', url: 'Patient/rb-p', ifModifiedSince: '2999-01-01T00:00:00Z' } },
        { request: { method: 'GET', url: 'Patient/rb-p', ifModifiedSince: '2000-01-01T00:00:00Z' } },
      );
      assert.deepEqual(statuses(res), ['304', '304', '200']);
    });

    it('an unexpected failure inside one entry is that entry\'s 500 with the request id; the others succeed', async () => {
      const res = await h.api.post(
        '/',
        { resourceType: 'Bundle', type: 'batch', entry: [good, { request: { method: 'GET', url: 'Patient/boom' } }, { request: { method: 'POST', url: 'Patient' }, resource: patient() }] },
        { 'X-Request-Id': 'batch-fault-1' },
      );
      assert.equal(res.status, 200);
      assert.deepEqual(statuses(res), ['200', '500', '201']);
      const outcome = res.body.entry[1].response.outcome;
      assert.match(outcome.issue[0].diagnostics, /batch-fault-1/);
      assert.doesNotMatch(JSON.stringify(outcome), /Cannot read properties/, 'details stay in the log');
    });
  });

  describe('found by fuzzing', () => {
    it('nesting deeper than 100 levels is a 400 (a few thousand overflowed the stack in validation)', async () => {
      const deep = (n: number) => `{"resourceType":"Patient","extension":[${'{"url":"http://x","extension":['.repeat(n)}{"url":"http://y","valueString":"z"}${']}'.repeat(n)}]}`;
      assert400(await h.api.request('post', '/Patient', { body: deep(1000), raw: true }), 'deep extensions', /100 levels/);
      assert400(await h.api.request('post', '/Patient', { body: `{"resourceType":"Patient","x":${'['.repeat(200000)}${']'.repeat(200000)}}`, raw: true }), 'deep arrays');
      assert.equal((await h.api.request('post', '/Patient', { body: deep(20), raw: true })).status, 201, 'twenty nested extensions are fine');
    });

    it('$validate with a malformed Parameters wrapper is a 400 (it was a 500)', async () => {
      for (const parameter of [5, [5, null], [{ name: 5 }]]) {
        assert400(await h.api.post('/Patient/$validate', { resourceType: 'Parameters', parameter }), JSON.stringify(parameter));
      }
      const inner = await h.api.post('/Patient/$validate', { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: patient({ gender: 'robot' }) }] });
      assert.equal(inner.status, 200, 'the resource inside is still reported on, not refused');
      assert.deepEqual(inner.body.issue[0].expression, ['Patient.gender']);
    });

    it('a "__proto__" property in a transaction entry is refused as in a plain create (it became the copy\'s prototype)', async () => {
      const body = '{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient","__proto__":{"managingOrganization":{"reference":"Organization/elsewhere"}}}}]}';
      const res = await h.api.request('post', '/', { body, raw: true });
      assert400(res, 'transaction');
      assert.match(JSON.stringify(res.body), /Unrecognized property '__proto__'/);
      assert400(await h.api.request('post', '/Patient', { body: '{"resourceType":"Patient","__proto__":{"gender":"male"}}', raw: true }), 'create');
    });

    it('two entries with one fullUrl are refused (bdl-7): references to it would be ambiguous', async () => {
      const before = await count('Patient');
      const entry = { fullUrl: 'urn:uuid:6f0b5f4e-0c0e-4d38-9a36-2b8f0c0b0a01', request: { method: 'POST', url: 'Patient' }, resource: patient() };
      for (const type of ['transaction', 'batch']) assert400(await h.api.post('/', { resourceType: 'Bundle', type, entry: [entry, entry] }), type, /bdl-7/);
      assert.equal(await count('Patient'), before);
    });

    it('_format given twice must agree', async () => {
      assert.equal((await h.api.get('/Patient/rb-p?_format=json&_format=application/json')).status, 200);
      assert400(await h.api.get('/Patient/rb-p?_format=json&_format=fhir%2Bjson'), '_format twice');
    });
  });
});
