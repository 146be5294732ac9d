import assert from 'node:assert/strict';
import type { AuditEvent } from 'fhir/r4';
import { QUERY_LIMIT } from '../../server/audit/hold';
import { sharedValidator } from '../../server/validation/validate';
import { assertValidFhir } from '../support/api';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const BASE = 'http://custodian.test/fhir';
const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
const FORM = 'application/x-www-form-urlencoded';

/**
 * A probe for an NHS number must leave a record of what was asked whichever route it takes:
 * `GET /Patient?identifier=…` always did; `POST /Patient/_search` with the criteria in its form
 * body and a batch or transaction's GET entries did not (found by a security review).
 */
describe('Audit: the query entity records every search criterion, however it was sent', () => {
  let h: Harness;
  let known: string;
  let n = 0;
  const rid = () => `audit-query-${++n}`;

  before(async () => {
    h = await startHarness();
    known = (await h.api.post('/Patient', patient({ name: [{ family: 'Queried' }], identifier: [{ system: NHS, value: '9434765919' }] }))).body.id as string;
  });
  after(() => h.close());

  /** The RESTful events of one request (by its X-Request-Id), each checked valid, and the query entity they all share. */
  async function queryOf(requestId: string): Promise<{ events: AuditEvent[]; description: string }> {
    const res = await h.api.get(`/AuditEvent?entity:identifier=${requestId}&_count=100`);
    assert.equal(res.status, 200);
    const events = ((res.body.entry ?? []) as { resource: AuditEvent }[]).map((e) => e.resource).filter((e) => e.type.code === 'rest');
    assert.ok(events.length > 0, `events of ${requestId}`);
    const descriptions = events.map((e) => {
      assertValidFhir(e, `AuditEvent of ${requestId}`);
      const report = sharedValidator().report('AuditEvent', e);
      assert.deepEqual([...report.base, ...report.profile], [], `AuditEvent of ${requestId} breaks the Custodian profile`);
      const query = e.entity?.find((x) => x.role?.code === '24');
      assert.ok(query, `a query entity in every event of ${requestId}: ${JSON.stringify(e.entity)}`);
      assert.equal(Buffer.from(query.query!, 'base64').toString(), query.description, 'query is the base64 of description');
      return query.description!;
    });
    assert.equal(new Set(descriptions).size, 1, 'every event of the request records the same query');
    return { events, description: descriptions[0] };
  }

  /** The recorded request line's method and the parameters its URL carries, in order. */
  function requestLine(description: string): { method: string; url: string; pairs: [string, string][] } {
    const [method, url] = description.split('\n', 1)[0].split(' ');
    return { method, url: url.split('?')[0], pairs: [...new URL(url).searchParams.entries()] };
  }

  it('POST /Patient/_search with the criteria only in its form body records them in the request line', async () => {
    const id = rid();
    const res = await h.api.request('post', '/Patient/_search', { body: `identifier=${encodeURIComponent(`${NHS}|9999999999`)}`, raw: true, contentType: FORM, headers: { 'X-Request-Id': id } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.entry, undefined, 'a probe that matched nobody');
    const { description } = await queryOf(id);
    assert.deepEqual(requestLine(description), { method: 'POST', url: `${BASE}/Patient/_search`, pairs: [['identifier', `${NHS}|9999999999`]] });
    assert.match(description, new RegExp(`\\nAccept: .*\\nX-Request-Id: ${id}$`));
  });

  it('POST /Patient/_search with criteria in both its URL and its body records both, the URL\'s first (as they are searched)', async () => {
    const id = rid();
    const res = await h.api.request('post', '/Patient/_search?family=Queried', { body: `identifier=${encodeURIComponent(`${NHS}|9434765919`)}`, raw: true, contentType: FORM, headers: { 'X-Request-Id': id } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.entry.length, 1);
    const { events, description } = await queryOf(id);
    assert.ok(events.some((e) => e.entity!.some((x) => x.what?.reference === `Patient/${known}`)), 'the patient found is on the trail');
    assert.deepEqual(requestLine(description), {
      method: 'POST',
      url: `${BASE}/Patient/_search`,
      pairs: [
        ['family', 'Queried'],
        ['identifier', `${NHS}|9434765919`],
      ],
    });
  });

  it('POST /_search (system level) records its form body\'s criteria too', async () => {
    const id = rid();
    const res = await h.api.request('post', '/_search', { body: `_type=Patient&identifier=${encodeURIComponent(`${NHS}|9434765919`)}`, raw: true, contentType: FORM, headers: { 'X-Request-Id': id } });
    assert.equal(res.status, 200, res.text);
    const { description } = await queryOf(id);
    assert.deepEqual(requestLine(description), {
      method: 'POST',
      url: `${BASE}/_search`,
      pairs: [
        ['_type', 'Patient'],
        ['identifier', `${NHS}|9434765919`],
      ],
    });
  });

  it('a batch records the request line of each GET entry, on the events of its writes too', async () => {
    const id = rid();
    const probe = `Patient?identifier=${NHS}|9999999999`;
    const res = await h.api.post(
      '/',
      {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          { request: { method: 'GET', url: probe } },
          { resource: patient({ name: [{ family: 'Batched' }] }), request: { method: 'POST', url: 'Patient' } },
          { request: { method: 'GET', url: `Patient/${known}` } },
        ],
      },
      { 'X-Request-Id': id },
    );
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.entry.map((e: { response: { status: string } }) => e.response.status), ['200 OK', '201 Created', '200 OK']);
    const { events, description } = await queryOf(id);
    const subtypes = events.map((e) => (e.subtype ?? []).map((c) => c.code));
    assert.ok(subtypes.some((s) => s.includes('create')) && subtypes.some((s) => s.includes('read')), `the write's event (committed with it) and the reads': ${JSON.stringify(subtypes)}`);
    assert.deepEqual(description.split('\n'), [`POST ${BASE}/`, 'Accept: */*', `X-Request-Id: ${id}`, `Bundle.entry[0]: GET ${probe}`, `Bundle.entry[2]: GET Patient/${known}`]);
  });

  it('a transaction records the request line of each GET entry in the events committed with it', async () => {
    const id = rid();
    const probe = `Patient?identifier=${NHS}|9434765919&_count=5`;
    const res = await h.api.post(
      '/',
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: patient({ name: [{ family: 'Transacted' }] }), request: { method: 'POST', url: 'Patient' } },
          { request: { method: 'GET', url: probe } },
        ],
      },
      { 'X-Request-Id': id },
    );
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.entry[1].resource.entry.length, 1);
    const { events, description } = await queryOf(id);
    assert.ok(events.some((e) => e.entity!.some((x) => x.what?.reference === `Patient/${known}`)), 'the patient the GET found is on the trail');
    assert.deepEqual(description.split('\n').slice(3), [`Bundle.entry[1]: GET ${probe}`]);
  });

  it('a conditional create records its If-None-Exist criteria, whether they matched or not', async () => {
    for (const [value, status] of [['9434765919', 200], ['9999999999', 201]] as const) {
      const id = rid();
      const criteria = `identifier=${NHS}|${value}`;
      const res = await h.api.post('/Patient', patient({ name: [{ family: 'Conditional' }], identifier: [{ system: NHS, value }] }), { 'X-Request-Id': id, 'If-None-Exist': criteria });
      assert.equal(res.status, status, res.text);
      if (status === 200) assert.equal(res.body.id, known);
      const { description } = await queryOf(id);
      assert.deepEqual(description.split('\n'), [`POST ${BASE}/Patient`, 'Accept: */*', `X-Request-Id: ${id}`, `If-None-Exist: ${criteria}`]);
    }
    // On any other request the header is not acted on, and so not recorded as if it had been.
    const id = rid();
    assert.equal((await h.api.get(`/Patient?_id=${known}`, { 'X-Request-Id': id, 'If-None-Exist': `identifier=${NHS}|9000000009` })).status, 200);
    assert.deepEqual((await queryOf(id)).description.split('\n'), [`GET ${BASE}/Patient?_id=${known}`, 'Accept: */*', `X-Request-Id: ${id}`]);
  });

  it("a Bundle's conditional writes record their criteria with its reads", async () => {
    const id = rid();
    const put = `Patient?identifier=${NHS}|9434765919`;
    const del = `Patient?identifier=${NHS}|9000000009`;
    const ifNoneExist = `identifier=${NHS}|9434765919`;
    const res = await h.api.post(
      '/',
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { request: { method: 'DELETE', url: del } },
          { resource: patient({ name: [{ family: 'Queried' }], identifier: [{ system: NHS, value: '9434765919' }] }), request: { method: 'PUT', url: put } },
          { fullUrl: 'urn:uuid:0b3ad1c4-8d1f-4a7a-9f4e-3c2b1a0d9e8f', resource: patient({ name: [{ family: 'Queried' }] }), request: { method: 'POST', url: 'Patient', ifNoneExist } },
          { resource: patient({ name: [{ family: 'Plain' }] }), request: { method: 'POST', url: 'Patient' } },
        ],
      },
      { 'X-Request-Id': id },
    );
    assert.equal(res.status, 200, res.text);
    const { description } = await queryOf(id);
    assert.deepEqual(description.split('\n').slice(3), [`Bundle.entry[0]: DELETE ${del}`, `Bundle.entry[1]: PUT ${put}`, `Bundle.entry[2]: POST Patient (If-None-Exist: ${ifNoneExist})`]);
    // A POST whose url holds a `?` still searches by its If-None-Exist (found by a second reading).
    const again = rid();
    const batch = await h.api.post('/', { resourceType: 'Bundle', type: 'batch', entry: [{ resource: patient({ name: [{ family: 'Queried' }] }), request: { method: 'POST', url: 'Patient?', ifNoneExist } }] }, { 'X-Request-Id': again });
    assert.equal(batch.status, 200, batch.text);
    assert.equal(batch.body.entry[0].response.status, '200 OK', 'the existing patient, found by its NHS number');
    assert.deepEqual((await queryOf(again)).description.split('\n').slice(3), [`Bundle.entry[0]: POST Patient? (If-None-Exist: ${ifNoneExist})`]);
  });

  it(`a Bundle's entries are recorded up to ${QUERY_LIMIT} characters, and what is cut off is counted`, async () => {
    const id = rid();
    const entry = Array.from({ length: 300 }, (_, i) => ({ request: { method: 'GET', url: `Patient?identifier=${NHS}|${String(i).padStart(10, '0')}&family=${'x'.repeat(40)}` } }));
    const res = await h.api.post('/', { resourceType: 'Bundle', type: 'batch', entry }, { 'X-Request-Id': id });
    assert.equal(res.status, 200, res.text);
    const { description } = await queryOf(id);
    const lines = description.split('\n');
    assert.equal(lines[3], `Bundle.entry[0]: GET ${entry[0].request.url}`);
    assert.ok(description.length <= QUERY_LIMIT + 200, `bounded: ${description.length}`);
    assert.match(lines.at(-1)!, /\.\.\. \(\d+ more characters not recorded\)$/);
  });
});
