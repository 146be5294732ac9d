import assert from 'node:assert/strict';
import type { Bundle, OperationOutcome } from 'fhir/r4';
import { openAccessPolicy } from '../../server/gate/policy';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const ids = (b: Bundle, mode = 'match') => (b.entry ?? []).filter((e) => e.search?.mode === mode).map((e) => e.resource!.id!);
const self = (b: Bundle) => b.link!.find((l) => l.relation === 'self')!.url!;
const outcome = (b: Bundle) => b.entry?.find((e) => e.search?.mode === 'outcome')?.resource as OperationOutcome | undefined;
const STRICT = { Prefer: 'handling=strict' };

/**
 * Points where a conformance review held the search against the words of the R4 search page
 * (http://hl7.org/fhir/R4/search.html) and found it wanting; each test quotes the rule it holds.
 */
describe('Search: conformance to the R4 search page', () => {
  let h: Harness;
  const p: string[] = [];
  const c: string[] = [];
  const get = async (q: string, headers?: Record<string, string>) => {
    const res = await h.api.get(q, headers);
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 500));
    return res.body as Bundle;
  };

  before(async () => {
    h = await startHarness({ policy: openAccessPolicy });
    for (const family of ['Carter', 'Abbott', 'Baker']) p.push((await h.api.post('/Patient', patient({ name: [{ family }] }))).body.id);
    for (const i of [0, 1]) c.push((await h.api.post('/Consent', consent(p[i]))).body.id);
  });
  after(() => h.close());

  describe('system-level _sort by a parameter some listed type lacks', () => {
    const types = '_type=Patient,Consent';

    it('is ignored and reported, not a 500: GET /?_sort=family', async () => {
      for (const q of [`/?${types}&_sort=family`, '/?_sort=family&_count=2', `/?_sort=family&${types}`, '/?_type=Patient,AuditEvent&_sort=identifier']) {
        const b = await get(q);
        assert.doesNotMatch(self(b), /_sort/, q);
        assert.match(JSON.stringify(outcome(b)), /_sort=(family|identifier)/, q);
      }
      const form = await h.api.request('post', '/_search', { body: '_sort=family', raw: true, contentType: 'application/x-www-form-urlencoded' });
      assert.equal(form.status, 200, JSON.stringify(form.body).slice(0, 300));
    });

    it('keeps the keys every type defines, in order', async () => {
      const b = await get(`/?${types}&_sort=family,-_lastUpdated&_count=100`);
      assert.match(self(b), /_sort=-_lastUpdated/);
      assert.deepEqual(ids(b).slice(0, 2), [c[1], c[0]]);
    });

    it('is a 400 naming it under Prefer: handling=strict', async () => {
      const res = await h.api.get(`/?${types}&_sort=family`, STRICT);
      assert.equal(res.status, 400);
      assert.match(JSON.stringify(res.body), /_sort=family/);
      assert.equal(res.body.resourceType, 'OperationOutcome');
    });

    it('still sorts when _type names only types that define the key', async () => {
      assert.deepEqual(ids(await get('/?_type=Patient&_sort=family', STRICT)), [p[1], p[2], p[0]]);
    });
  });

  describe('_count=0', () => {
    it('is treated as _summary=count: the total of the matches, and no entries', async () => {
      // "if _count has the value 0, this shall be treated the same as _summary=count" and
      // "The _count parameter has no impact on the value of Bundle.total" (search.html#count)
      const b = await get('/Patient?_count=0');
      assert.equal(b.total, 3);
      assert.equal(b.entry, undefined);
      assert.equal((await get('/Patient?family=abbott,baker&_count=0')).total, 2);
      assert.equal((await get(`/Consent?patient=${p[0]}&_count=0`)).total, 1);
      assert.match(self(b), /_count=0/);
    });
  });
});
