import assert from 'node:assert/strict';
import type { Bundle, Resource } from 'fhir/r4';
import { openAccessPolicy } from '../../server/gate/policy';
import { consent, NHS_VALID, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
const ids = (b: Bundle, mode = 'match') => (b.entry ?? []).filter((e) => e.search?.mode === mode).map((e) => e.resource!.id!);
const next = (b: Bundle) => b.link?.find((l) => l.relation === 'next')?.url;
const prev = (b: Bundle) => b.link?.find((l) => l.relation === 'previous')?.url;
const self = (b: Bundle) => b.link!.find((l) => l.relation === 'self')!.url!;
const path = (url: string | undefined) => url!.replace('http://custodian.test/fhir', '');

/** Result shaping, paging, chaining, includes and system search (the consent layer set aside; see security.test.ts). */
describe('Search: sorting, paging, includes, chaining, _has, system search', () => {
  let h: Harness;
  const t0 = Date.UTC(2032, 0, 1);
  const names = ['Zeta', 'Alpha', 'Mu', 'Beta', 'Alpha', 'Omega', 'Kappa', 'Ábel', 'Delta', 'Eta'];
  const births = ['1990-01-01', '1985-06-15', '1985', '2001-12-31', '1970-03-03', undefined, '1999-09-09', '1985-06-15', '1960-01-01', '2010-10-10'];
  const p: string[] = [];
  const c: string[] = [];
  const get = (q: string, headers?: Record<string, string>) => h.api.bundle(q, headers);

  before(async () => {
    h = await startHarness({ policy: openAccessPolicy, frozenAt: t0 });
    for (let i = 0; i < names.length; i++) {
      h.clock.now = t0 + i * 1000;
      const extra: Record<string, unknown> = { name: [{ family: names[i], given: [`G${i}`] }], identifier: [{ system: 'urn:test:n', value: String(i) }] };
      if (births[i]) extra.birthDate = births[i];
      if (i === 0) extra.identifier = [{ system: NHS, value: NHS_VALID }];
      if (i === 3) extra.link = [{ other: { reference: `Patient/${p[1]}` }, type: 'seealso' }];
      p.push((await h.api.post('/Patient', patient(extra))).body.id);
    }
    // Consents for patients 0, 1 (two: one inactive) and 2
    h.clock.now = t0 + 60000;
    c.push((await h.api.post('/Consent', consent(p[0], { dateTime: '2030-01-01' }))).body.id);
    c.push((await h.api.post('/Consent', consent(p[1], { dateTime: '2031-01-01' }))).body.id);
    c.push((await h.api.post('/Consent', consent(p[1], { status: 'inactive', dateTime: '2029-01-01', sourceReference: { reference: `Consent/${c[1]}` } }))).body.id);
    c.push((await h.api.post('/Consent', consent(p[2], { dateTime: '2031-06-01', policy: [{ uri: 'https://example.org/policy/a' }] }))).body.id);
  });
  after(() => h.close());

  describe('_sort', () => {
    it('sorts by a string parameter, accents folded, ties broken by insertion order', async () => {
      const b = await get('/Patient?_sort=family&_count=100');
      // Ábel folds to abel, before alpha
      assert.deepEqual(ids(b), [p[7], p[1], p[4], p[3], p[8], p[9], p[6], p[2], p[5], p[0]]);
    });

    it('sorts descending with -, and by several keys', async () => {
      assert.deepEqual(ids(await get('/Patient?_sort=-family&_count=3')), [p[0], p[5], p[2]]);
      // family ascending, then birthdate descending: Ábel, Alpha (1985-06-15), Alpha (1970)
      assert.deepEqual(ids(await get('/Patient?_sort=family,-birthdate&_count=3')), [p[7], p[1], p[4]]);
      assert.deepEqual(ids(await get('/Patient?family=alpha&_sort=-birthdate')), [p[1], p[4]]);
      assert.deepEqual(ids(await get('/Patient?family=alpha&_sort=birthdate')), [p[4], p[1]]);
    });

    it('sorts dates by the start of the range ascending and its end descending; missing values last', async () => {
      const asc = ids(await get('/Patient?_sort=birthdate&_count=100'));
      assert.deepEqual(asc, [p[8], p[4], p[2], p[1], p[7], p[0], p[6], p[3], p[9], p[5]]);
      const desc = ids(await get('/Patient?_sort=-birthdate&_count=100'));
      // 1985 (the whole year) ends after 1985-06-15
      assert.deepEqual(desc, [p[9], p[3], p[6], p[0], p[2], p[1], p[7], p[4], p[8], p[5]]);
    });

    it('sorts by _lastUpdated and _id', async () => {
      assert.deepEqual(ids(await get('/Patient?_sort=-_lastUpdated&_count=2')), [p[9], p[8]]);
      assert.deepEqual(ids(await get('/Patient?_sort=_id&_count=100')), [...p].sort());
    });

    it('pages through a sorted result forwards and backwards without repeats or gaps', async () => {
      const seen: string[] = [];
      let b = await get('/Patient?_sort=-birthdate&_count=3');
      const pages: string[][] = [];
      for (;;) {
        pages.push(ids(b));
        seen.push(...ids(b));
        const n = next(b);
        if (!n) break;
        assert.match(n, /_sort=-birthdate/);
        b = await get(path(n));
      }
      assert.deepEqual(seen, ids(await get('/Patient?_sort=-birthdate&_count=100')));
      // and back again
      const back: string[][] = [];
      for (let u = prev(b); u; ) {
        const page = await get(path(u));
        back.unshift(ids(page));
        u = prev(page);
      }
      assert.deepEqual(back, pages.slice(0, -1));
    });

    it('keeps pages stable while others insert and update', async () => {
      const first = await get('/Patient?_sort=family&_count=4');
      // a new Patient that sorts onto the first page, and an update moving one of page 2 to the end
      await h.api.post('/Patient', patient({ name: [{ family: 'Aardvark' }] }));
      const n = next(first)!;
      const second = await get(path(n));
      assert.deepEqual(ids(second), [p[8], p[9], p[6], p[2]]);
      const cleanup = await get('/Patient?family=Aardvark');
      await h.api.delete(`/Patient/${ids(cleanup)[0]}`);
    });

    it('refuses an unknown sort key under strict handling and reports it otherwise', async () => {
      assert.equal((await h.api.get('/Patient?_sort=nonsense', { Prefer: 'handling=strict' })).status, 400);
      const b = await get('/Patient?_sort=nonsense&_count=1');
      assert.equal(b.entry!.at(-1)!.search!.mode, 'outcome');
      assert.doesNotMatch(self(b), /_sort/);
      assert.equal((await h.api.get('/Patient?_sort=family,family')).status, 400);
    });

    it('refuses a cursor that belongs to another sort', async () => {
      const n = next(await get('/Patient?_sort=family&_count=2'))!;
      const cursor = new URL(n).searchParams.get('_cursor')!;
      assert.equal((await h.api.get(`/Patient?_count=2&_cursor=${cursor}`)).status, 400);
      assert.equal((await h.api.get('/Patient?_cursor=not-a-cursor')).status, 400);
      // opaque and tamper-evident: no row position in the clear, and one flipped byte is refused
      assert.throws(() => JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')));
      const raw = Buffer.from(cursor, 'base64url');
      raw[raw.length - 1] ^= 1;
      assert.equal((await h.api.get(`/Patient?_sort=family&_count=2&_cursor=${raw.toString('base64url')}`)).status, 400);
      // the same cursor on its own search works
      assert.equal((await h.api.get(`/Patient?_sort=family&_count=2&_cursor=${cursor}`)).status, 200);
    });
  });

  describe('_include and _revinclude', () => {
    it('_include adds the referenced Patients once, as include entries', async () => {
      const b = await get(`/Consent?patient=${p[1]},${p[0]}&_include=Consent:patient`);
      assert.deepEqual(ids(b).sort(), [c[0], c[1], c[2]].sort());
      assert.deepEqual(ids(b, 'include').sort(), [p[0], p[1]].sort());
      assert.match(self(b), /_include=Consent%3Apatient/);
    });

    it('_include with a target type, and * for every reference parameter', async () => {
      assert.deepEqual(ids(await get(`/Consent?_id=${c[2]}&_include=Consent:patient:Patient`), 'include'), [p[1]]);
      const all = await get(`/Consent?_id=${c[2]}&_include=*`);
      assert.deepEqual(ids(all, 'include').sort(), [p[1], c[1]].sort(), 'patient and source-reference');
    });

    it('_revinclude adds the Consents pointing at the matched Patients', async () => {
      const b = await get(`/Patient?_id=${p[1]},${p[2]}&_revinclude=Consent:patient`);
      assert.deepEqual(ids(b).sort(), [p[1], p[2]].sort());
      assert.deepEqual(ids(b, 'include').sort(), [c[1], c[2], c[3]].sort());
    });

    it(':iterate follows one more level from what was included', async () => {
      const b = await get(`/Consent?_id=${c[2]}&_include=Consent:patient&_revinclude:iterate=Consent:patient`);
      assert.deepEqual(ids(b, 'include').sort(), [p[1], c[1]].sort());
      const linked = await get(`/Patient?_id=${p[3]}&_include=Patient:link&_revinclude:iterate=Consent:patient`);
      assert.deepEqual(ids(linked, 'include').sort(), [p[1], c[1], c[2]].sort());
    });

    it('_revinclude=* adds what points at the matches through any reference parameter; Type:* through any of that type', async () => {
      const all = await get(`/Patient?_id=${p[1]}&_revinclude=*`);
      const included = (all.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => e.resource!);
      const got = included.map((r) => r.id!);
      for (const id of [c[1], c[2], p[3]]) assert.ok(got.includes(id), `${id} (its Consents, and the Patient linking to it) in ${got.join(', ')}`);
      assert.ok(included.some((r) => r.resourceType === 'AuditEvent'), 'the AuditEvents about the patient point at it too');
      for (const r of included) assert.ok(JSON.stringify(r).includes(`Patient/${p[1]}`), `${r.resourceType}/${r.id} points at the patient`);
      assert.equal(new Set(got).size, got.length, 'each once');
      assert.match(self(all), /_revinclude=\*/);
      assert.deepEqual(ids(await get(`/Patient?_id=${p[1]}&_revinclude=Consent:*`), 'include').sort(), [c[1], c[2]].sort());
      assert.deepEqual(ids(await get(`/Consent?_id=${c[1]}&_revinclude=Consent:*`), 'include'), [c[2]], 'source-reference');
      // A wildcard that stands for nothing is ignored and reported; strict handling refuses it.
      const none = await get(`/Consent?_id=${c[1]}&_revinclude=Patient:*`);
      assert.deepEqual(ids(none, 'include'), []);
      assert.ok(none.entry!.some((e) => e.search?.mode === 'outcome'));
      assert.equal((await h.api.get(`/Consent?_id=${c[1]}&_revinclude=Patient:*`, { Prefer: 'handling=strict' })).status, 400);
    });

    it('refuses malformed include values', async () => {
      for (const v of ['_include=Consent', '_include=Patient:family', '_include=Consent:patient:Organization', '_revinclude=Consent', '_include:deep=Consent:patient', '_include=Patient:link']) {
        assert.equal((await h.api.get(`/Consent?${v}`)).status, 400, v);
      }
    });
  });

  describe('chaining and _has', () => {
    it('chains one level through a reference: Consent?patient.identifier=…', async () => {
      assert.deepEqual(ids(await get(`/Consent?patient.identifier=${NHS}|${NHS_VALID}`)), [c[0]]);
      assert.deepEqual(ids(await get('/Consent?patient.family=alpha')).sort(), [c[1], c[2]].sort());
      assert.deepEqual(ids(await get('/Consent?patient:Patient.name=Mu&status=active')), [c[3]]);
      assert.deepEqual(ids(await get('/Consent?patient.birthdate=ge2000')), []);
      assert.deepEqual(ids(await get('/Patient?link.family=Alpha')), [p[3]]);
    });

    it('reverse-chains with _has: Patient?_has:Consent:patient:status=active', async () => {
      assert.deepEqual(ids(await get('/Patient?_has:Consent:patient:status=active&_count=100')).sort(), [p[0], p[1], p[2]].sort());
      assert.deepEqual(ids(await get('/Patient?_has:Consent:patient:status=inactive')), [p[1]]);
      assert.deepEqual(ids(await get('/Patient?_has:Consent:patient:date=ge2031&_sort=family')), [p[1], p[2]]);
      assert.equal((await get('/Patient?_has:Consent:patient:status=active&_summary=count')).total, 3);
    });

    it('refuses chains longer than one level and malformed _has', async () => {
      assert.equal((await h.api.get('/Consent?patient.link.family=x', { Prefer: 'handling=strict' })).status, 400);
      assert.equal((await h.api.get('/Patient?_has:Consent:status=active')).status, 400);
      assert.equal((await h.api.get('/Patient?_has:Consent:category:status=active')).status, 400);
      assert.equal((await h.api.get('/Consent?patient:Organization.name=x')).status, 400);
    });
  });

  describe('result shaping', () => {
    it('_total: none, estimate and accurate; _summary=count', async () => {
      assert.equal((await get('/Patient?_count=2&_total=accurate')).total, 10);
      assert.equal((await get('/Patient?_count=2&_total=estimate')).total, 10);
      assert.equal((await get('/Patient?_total=none')).total, undefined);
      const count = await get('/Patient?family=alpha&_summary=count');
      assert.equal(count.total, 2);
      assert.equal(count.entry, undefined);
      assert.equal((await h.api.get('/Patient?_total=all')).status, 400);
    });

    it('_summary and _elements shape each entry and mark it SUBSETTED', async () => {
      const s = await get(`/Patient?_id=${p[0]}&_summary=true`);
      const r = s.entry![0].resource as Resource & Record<string, unknown>;
      assert.ok(r.meta!.tag!.some((t) => t.code === 'SUBSETTED'));
      const e = await get(`/Patient?_id=${p[0]}&_elements=birthDate`);
      const er = e.entry![0].resource as Resource & Record<string, unknown>;
      assert.equal(er.birthDate, '1990-01-01');
      assert.equal(er.name, undefined);
      assert.match(self(e), /_elements=birthDate/);
      const d = await get(`/Patient?_id=${p[0]}&_summary=data`);
      assert.equal((d.entry![0].resource as unknown as Record<string, unknown>).text, undefined);
      assert.equal((await h.api.get('/Patient?_summary=maybe')).status, 400);
    });

    it('POST /{type}/_search takes the parameters as a form, with the same result as GET', async () => {
      const form = new URLSearchParams({ family: 'alpha', _sort: '-birthdate' }).toString();
      const res = await h.api.request('post', '/Patient/_search', { body: form, raw: true, contentType: 'application/x-www-form-urlencoded' });
      assert.equal(res.status, 200);
      assert.deepEqual(ids(res.body), [p[1], p[4]]);
      const summary = await h.api.request('post', '/Patient/_search', { body: 'family=alpha&_summary=count', raw: true, contentType: 'application/x-www-form-urlencoded' });
      assert.equal(summary.body.total, 2);
    });

    it('the self link shows only what was applied', async () => {
      const b = await get('/Patient?family=alpha&bogus=1&_count=5&_sort=family');
      assert.equal(self(b), 'http://custodian.test/fhir/Patient?family=alpha&_count=5&_sort=family');
      assert.equal(b.entry!.at(-1)!.search!.mode, 'outcome');
    });
  });

  describe('system-level search', () => {
    it('searches every type with the common parameters, and _type narrows it', async () => {
      const all = await get(`/?_id=${p[0]},${c[0]}`);
      assert.deepEqual(ids(all).sort(), [p[0], c[0]].sort());
      const typed = await get(`/?_type=Consent&_lastUpdated=ge${new Date(t0 + 60000).toISOString()}&_count=100`);
      assert.deepEqual(ids(typed).sort(), [...c].sort());
      const form = await h.api.request('post', '/_search', { body: `_type=Patient&_id=${p[0]},${c[0]}`, raw: true, contentType: 'application/x-www-form-urlencoded' });
      assert.deepEqual(ids(form.body), [p[0]]);
    });

    it('sorts and pages across types', async () => {
      const seen: string[] = [];
      let b = await get('/?_type=Patient,Consent&_sort=-_lastUpdated&_count=5');
      for (;;) {
        seen.push(...ids(b));
        const n = next(b);
        if (!n) break;
        b = await get(path(n));
      }
      assert.deepEqual(seen.slice(0, 4).sort(), [...c].sort());
      assert.equal(new Set(seen).size, 14);
    });

    it('reports type-specific parameters as unsupported there', async () => {
      assert.equal((await h.api.get('/?family=x', { Prefer: 'handling=strict' })).status, 400);
      assert.equal((await h.api.get('/?_type=Patient&family=Alpha')).body.entry.length, 2);
      assert.equal((await h.api.get('/?_type=Observation', { Prefer: 'handling=strict' })).status, 400);
    });
  });

  describe('parameters no spec example carries', () => {
    it('Consent source-reference and policy', async () => {
      assert.deepEqual(ids(await get(`/Consent?source-reference=Consent/${c[1]}`)), [c[2]]);
      assert.deepEqual(ids(await get('/Consent?_has:Consent:source-reference:status=inactive')), [c[1]]);
    });

    it('AuditEvent agent-role and source', async () => {
      const event = {
        resourceType: 'AuditEvent',
        type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
        recorded: '2019-01-01T00:00:00Z',
        agent: [{ requestor: true, who: { reference: `Patient/${p[0]}` }, role: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', code: 'PAT' }] }] }],
        source: { observer: { reference: `Patient/${p[0]}` } },
      };
      const id = (await h.api.post('/AuditEvent', event)).body.id;
      assert.deepEqual(ids(await get('/AuditEvent?agent-role=PAT')), [id]);
      assert.deepEqual(ids(await get(`/AuditEvent?source=Patient/${p[0]}`)), [id]);
      assert.deepEqual(ids(await get(`/AuditEvent?patient=${p[0]}&date=lt2020`)), [id]);
    });
  });

  describe('long values', () => {
    it('index and find values longer than an index key holds (FHIR strings may be a megabyte)', async () => {
      const family = 'Long' + 'x'.repeat(3000) + 'tail';
      const mrn = 'M'.repeat(4000);
      const created = await h.api.post('/Patient', patient({ name: [{ family }], identifier: [{ system: 'urn:test:long', value: mrn }] }));
      assert.equal(created.status, 201, JSON.stringify(created.body).slice(0, 300));
      const id = created.body.id;
      assert.deepEqual(ids(await get(`/Patient?family:exact=${family}`)), [id]);
      assert.deepEqual(ids(await get(`/Patient?family:exact=${family.slice(0, -1)}`)), []);
      assert.deepEqual(ids(await get(`/Patient?family=${family.slice(0, 100)}`)), [id]);
      assert.deepEqual(ids(await get(`/Patient?identifier=urn:test:long|${mrn}`)), [id]);
      assert.deepEqual(ids(await get(`/Patient?identifier=urn:test:long|${mrn.slice(1)}`)), []);
      assert.deepEqual(ids(await get(`/Patient?family=long&_sort=family&_count=1`)), [id]);
      await h.api.delete(`/Patient/${id}`);
    });
  });

  describe('paging while others write', () => {
    it('a reader walking 7 at a time while a writer inserts sees every earlier match exactly once', async () => {
      const before = ids(await get('/Patient?_count=1000'));
      const seen: string[] = [];
      let b = await get('/Patient?_count=7');
      let k = 0;
      for (;;) {
        seen.push(...ids(b));
        // a write between every page: one new Patient, one update of an already-seen one
        await h.api.post('/Patient', patient({ name: [{ family: `Late${k++}` }] }));
        const n = next(b);
        if (!n) break;
        b = await get(path(n));
      }
      for (const id of before) assert.equal(seen.filter((s) => s === id).length, 1, id);
      assert.equal(new Set(seen).size, seen.length, 'no repeats');
    });
  });
});
