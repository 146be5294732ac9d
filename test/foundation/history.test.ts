import assert from 'node:assert/strict';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

describe('Foundation: history (instance, type, system)', () => {
  let h: Harness;
  const start = Date.UTC(2030, 0, 1, 12, 0, 0);
  before(async () => {
    h = await startHarness({ frozenAt: start });
  });
  after(() => h.close());

  const at = (minutes: number) => {
    h.clock.now = start + minutes * 60000;
  };

  let id: string;
  before(async () => {
    at(0);
    id = (await h.api.post('/Patient', patient({ gender: 'male' }))).body.id;
    at(10);
    await h.api.put(`/Patient/${id}`, patient({ id, gender: 'female' }));
    at(20);
    await h.api.patch(`/Patient/${id}`, [{ op: 'add', path: '/active', value: true }]);
    at(25);
    await h.api.post('/Consent', consent(id));
    at(30);
    await h.api.delete(`/Patient/${id}`);
  });

  it('instance history lists every version newest first, with request and response', async () => {
    const b = (await h.api.get(`/Patient/${id}/_history`)).body;
    assert.equal(b.type, 'history');
    assert.deepEqual(
      b.entry.map((e: { request: { method: string }; response: { etag: string } }) => [e.request.method, e.response.etag]),
      [
        ['DELETE', 'W/"4"'],
        ['PATCH', 'W/"3"'],
        ['PUT', 'W/"2"'],
        ['POST', 'W/"1"'],
      ],
    );
    assert.equal(b.entry[0].resource, undefined, 'a deletion carries no resource');
    assert.equal(b.entry[1].resource.active, true);
    assert.equal(b.entry[3].response.status, '201 Created');
  });

  it('_since keeps versions written at or after the instant', async () => {
    const b = (await h.api.get(`/Patient/${id}/_history?_since=${new Date(start + 10 * 60000).toISOString()}`)).body;
    assert.deepEqual(b.entry.map((e: { response: { etag: string } }) => e.response.etag), ['W/"4"', 'W/"3"', 'W/"2"']);
    assert.equal((await h.api.get(`/Patient/${id}/_history?_since=2030-01-01`)).status, 400, '_since must be an instant');
  });

  it('_at keeps the versions that were current at some time in the given period', async () => {
    const minute15 = new Date(start + 15 * 60000).toISOString();
    const b = (await h.api.get(`/Patient/${id}/_history?_at=${minute15}`)).body;
    assert.deepEqual(b.entry.map((e: { response: { etag: string } }) => e.response.etag), ['W/"2"']);
    const day = (await h.api.get(`/Patient/${id}/_history?_at=2030-01-01`)).body;
    assert.equal(day.entry.length, 4, 'every version was current during that day');
    assert.equal((await h.api.get(`/Patient/${id}/_history?_at=2029`)).body.entry, undefined);
    assert.equal((await h.api.get(`/Patient/${id}/_history?_at=notadate`)).status, 400);
  });

  it('type and system history include every type, newest first', async () => {
    const type = (await h.api.get('/Patient/_history')).body;
    assert.equal(type.entry.length, 4);
    // System history also holds the AuditEvents every request writes; leave those aside here.
    const system = (await h.api.get('/_history?_count=1000')).body;
    const data = system.entry.filter((e: { fullUrl: string }) => !e.fullUrl.includes('/AuditEvent/'));
    assert.equal(data.length, 5);
    assert.equal(data[0].request.method, 'DELETE');
    assert.equal(data[1].resource.resourceType, 'Consent');
  });

  it('pages with _count and next links that visit every version exactly once, also while others write', async () => {
    for (let i = 0; i < 12; i++) await h.api.post('/Patient', patient());
    const seen: string[] = [];
    let url: string | undefined = '/Patient/_history?_count=4';
    let pages = 0;
    while (url) {
      const b = (await h.api.get(url)).body as { entry: { fullUrl: string; response: { etag: string } }[]; link: { relation: string; url: string }[] };
      pages++;
      for (const e of b.entry) seen.push(`${e.fullUrl}|${e.response.etag}`);
      // a write between pages must not shift the walk
      await h.api.post('/Patient', patient());
      const next = b.link.find((l) => l.relation === 'next');
      url = next ? next.url.replace('http://custodian.test/fhir', '') : undefined;
    }
    assert.equal(seen.length, 16);
    assert.equal(new Set(seen).size, 16);
    assert.equal(pages, 4);
  });

  it('answers 404 for the history of an unknown resource, 400 for a bad _count', async () => {
    assert.equal((await h.api.get('/Patient/unknown/_history')).status, 404);
    assert.equal((await h.api.get('/Patient/_history?_count=many')).status, 400);
  });

  it('reports unknown parameters, or rejects them with Prefer: handling=strict', async () => {
    const lenient = (await h.api.get('/Patient/_history?_count=1&colour=red')).body;
    assert.equal(lenient.entry.at(-1).resource.resourceType, 'OperationOutcome');
    assert.equal((await h.api.get('/Patient/_history?colour=red', { Prefer: 'handling=strict' })).status, 400);
  });
});
