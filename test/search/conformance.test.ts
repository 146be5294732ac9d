import assert from 'node:assert/strict';
import type { Bundle, OperationOutcome, StructureDefinition } from 'fhir/r4';
import { RESOURCE_TYPES } from '../../resources';
import { openAccessPolicy } from '../../server/gate/policy';
import { matchesWords } from '../../server/search/extract';
import { searchParams } from '../../server/search/parameters';
import { paramId } from '../../server/search/param-id';
import { migrate } from '../../server/store/migrations';
import { reindexIfAsked } from '../../server/store/reindex';
import { consent, examples, patient, repoJson, storeSpecExamples } from '../support/fixtures';
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
  const get = (q: string, headers?: Record<string, string>) => h.api.bundle(q, headers);

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

  describe('_elements and _summary with _include and _revinclude', () => {
    it('_elements shapes the matches only: "The list of elements does not apply to included resources"', async () => {
      const b = await get(`/Consent?_id=${c[0]}&_include=Consent:patient&_elements=status`);
      const [match] = b.entry!.filter((e) => e.search?.mode === 'match');
      const [included] = b.entry!.filter((e) => e.search?.mode === 'include');
      assert.equal((match.resource as { scope?: unknown }).scope !== undefined, true, 'scope is mandatory, so kept');
      assert.equal((match.resource as { policyRule?: unknown }).policyRule, undefined);
      assert.ok(match.resource!.meta!.tag!.some((t) => t.code === 'SUBSETTED'));
      assert.equal(included.resource!.id, p[0]);
      assert.deepEqual((included.resource as { name?: unknown }).name, [{ family: 'Carter' }]);
      assert.ok(!(included.resource!.meta?.tag ?? []).some((t) => t.code === 'SUBSETTED'));
      const rev = await get(`/Patient?_id=${p[0]}&_revinclude=Consent:patient&_elements=gender`);
      const revIncluded = rev.entry!.find((e) => e.search?.mode === 'include')!.resource as { policyRule?: unknown };
      assert.ok(revIncluded.policyRule);
    });

    it('_summary applies to included resources too', async () => {
      const b = await get(`/Consent?_id=${c[0]}&_include=Consent:patient&_summary=data`);
      for (const e of b.entry!) assert.ok(e.resource!.meta!.tag!.some((t) => t.code === 'SUBSETTED'), e.search!.mode);
    });
  });

  describe('_summary=text with _include or _revinclude', () => {
    it('is a 400: "the _include and _revinclude parameters cannot be mixed with _summary=text"', async () => {
      for (const q of [`/Consent?_include=Consent:patient&_summary=text`, `/Patient?_summary=text&_revinclude=Consent:patient`, `/Consent?_summary=text&_include:iterate=Consent:patient`, '/?_summary=text&_include=Consent:patient']) {
        const res = await h.api.get(q);
        assert.equal(res.status, 400, q);
        assert.equal(res.body.resourceType, 'OperationOutcome');
        assert.match(JSON.stringify(res.body), /_summary=text/, q);
      }
      assert.equal((await h.api.get('/Consent?_include=Consent:patient&_summary=true')).status, 200);
      assert.equal((await h.api.get('/Consent?_summary=text')).status, 200);
      // An empty _include is no include: empty parameters are ignored.
      assert.equal((await h.api.get('/Consent?_summary=text&_include=')).status, 200);
      assert.equal((await h.api.get('/?_summary=text&_revinclude=')).status, 200);
    });
  });

  describe('unsupported modifiers', () => {
    const unsupported = [
      'family:foo=x',
      'gender:in=http://x',
      'birthdate:exact=1980',
      '_id:exact=t-p1',
      'address-use:not-in=x',
      'family:text=x',
      'general-practitioner:above=x',
      'link.family:foo=x',
    ];

    it('are a 400 naming the parameter, whatever the handling: "Servers SHALL reject any search request that contains a search parameter with an unsupported modifier"', async () => {
      for (const q of unsupported) {
        const name = q.slice(0, q.lastIndexOf('='));
        for (const headers of [undefined, STRICT, { Prefer: 'handling=lenient' }]) {
          const res = await h.api.get(`/Patient?${q}`, headers);
          assert.equal(res.status, 400, `${q} ${JSON.stringify(headers)}`);
          assert.equal(res.body.resourceType, 'OperationOutcome');
          assert.ok(JSON.stringify(res.body).includes(name), `${q}: ${JSON.stringify(res.body)}`);
        }
      }
    });

    it('in a chain or _has too', async () => {
      assert.equal((await h.api.get('/Consent?patient.family:foo=x')).status, 400);
      assert.equal((await h.api.get('/Patient?_has:Consent:patient:status:in=active')).status, 400);
      assert.equal((await h.api.get('/?_id:exact=x')).status, 400);
    });

    it('supported modifiers still work, and an unknown parameter name is still only reported', async () => {
      assert.deepEqual(ids(await get('/Patient?family:exact=Abbott')), [p[1]]);
      assert.deepEqual(ids(await get('/Patient?family:contains=arte')), [p[0]]);
      assert.equal(ids(await get('/Patient?family=abbott,baker,carter&gender:not=male')).length, 3);
      assert.equal(ids(await get('/Patient?family=abbott,baker,carter&gender:missing=true')).length, 3);
      assert.deepEqual(ids(await get(`/Consent?patient:Patient=${p[0]}`)), [c[0]]);
      const b = await get('/Patient?colour:foo=blue');
      assert.match(JSON.stringify(outcome(b)), /colour:foo/);
    });
  });

  describe('empty parameters', () => {
    it('are ignored, under strict handling too, and left out of the self link: "Empty parameters are not an error - they are just ignored by the server"', async () => {
      for (const headers of [undefined, STRICT]) {
        const b = await get('/Patient?family=&given=&family=abbott&_count=&_sort=&_summary=&_elements=&_include=&_cursor=', headers);
        assert.deepEqual(ids(b), [p[1]]);
        assert.equal(self(b), 'http://custodian.test/fhir/Patient?family=abbott');
        assert.equal(outcome(b), undefined);
        assert.ok(!b.entry![0].resource!.meta?.tag?.some((t) => t.code === 'SUBSETTED'));
      }
      assert.equal(ids(await get('/Patient?family=', STRICT)).length, 3);
    });

    it('in a system search too, _type= included', async () => {
      const b = await get(`/?_type=&_id=${p[0]},${c[0]}&family=&_sort=`, STRICT);
      assert.deepEqual(ids(b).sort(), [p[0], c[0]].sort());
      assert.equal(self(b), `http://custodian.test/fhir/?_id=${encodeURIComponent(`${p[0]},${c[0]}`)}`);
    });
  });

  describe('escaping', () => {
    it('a backslash that escapes nothing is a 400: "The parameter value xx\\xx is illegal"', async () => {
      for (const q of ['identifier=a\\b', 'family=x\\', 'family=\\\\\\y', 'gender=\\male', 'link.family=a\\b', '_has:Consent:patient:status=a\\b']) {
        for (const headers of [undefined, STRICT]) {
          const res = await h.api.get(`/Patient?${encodeURI(q)}`, headers);
          assert.equal(res.status, 400, q);
          assert.equal(res.body.resourceType, 'OperationOutcome');
        }
      }
    });

    it('\\, \\$ \\| and \\\\ are escapes', async () => {
      for (const q of ['identifier=a\\,b', 'identifier=a\\$b', 'identifier=a\\|b', 'family=a\\\\b', 'identifier=u\\|v|w\\,x']) {
        assert.equal((await h.api.get(`/Patient?${encodeURI(q)}`, STRICT)).status, 200, q);
      }
    });
  });

  describe('token search on string elements', () => {
    let event: string;
    let jose: string;
    before(async () => {
      jose = (await h.api.post('/Patient', patient({ name: [{ family: 'Perez' }], telecom: [{ system: 'email', value: 'Jose@Ex.org' }], identifier: [{ system: 'urn:test:case', value: 'AbC' }] }))).body.id;
      const created = await h.api.post('/AuditEvent', {
        resourceType: 'AuditEvent',
        type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
        recorded: '2019-01-01T00:00:00Z',
        agent: [{ requestor: true, altId: 'gh1', who: { display: 'someone' } }],
        source: { site: 'Cloud', observer: { display: 'elsewhere' } },
      });
      assert.equal(created.status, 201, created.text);
      event = created.body.id;
    });

    it('is case-insensitive: "If the underlying data type is string then the search is not case sensitive"', async () => {
      for (const q of ['altid=GH1', 'altid=gh1', 'site=CLOUD', 'site=cloud']) assert.deepEqual(ids(await get(`/AuditEvent?${q}&date=lt2020`)), [event], q);
      for (const q of ['email=JOSE@EX.ORG', 'email=jose@ex.org', 'telecom=email|JOSE@ex.org']) assert.deepEqual(ids(await get(`/Patient?${q}`)), [jose], q);
      assert.deepEqual(ids(await get(`/Patient?family=perez&email:not=JOSE@EX.ORG`)), []);
    });

    it('codes and identifiers keep their case (their system decides it)', async () => {
      assert.deepEqual(ids(await get('/Patient?identifier=urn:test:case|AbC')), [jose]);
      assert.deepEqual(ids(await get('/Patient?identifier=urn:test:case|abc')), []);
      assert.deepEqual(ids(await get('/Patient?gender=MALE&family=perez')), []);
    });

    it('migration 0030 rebuilds rows indexed in their original case', async () => {
      // As an older build left them: the codes as written.
      await h.store.driver.run('UPDATE idx_token SET code = ? WHERE pid = ? AND code = ?', ['GH1', paramId('AuditEvent', 'altid'), 'gh1']);
      await h.store.driver.run('UPDATE idx_token SET code = ? WHERE pid = ? AND code = ?', ['Jose@Ex.org', paramId('Patient', 'email'), 'jose@ex.org']);
      assert.deepEqual(ids(await get('/AuditEvent?altid=gh1&date=lt2020')), []);
      await h.store.driver.run("DELETE FROM custodian_migrations WHERE id = '0030-token-case-folding'");
      assert.deepEqual(await migrate(h.store.sequelize), ['0030-token-case-folding']);
      assert.ok((await reindexIfAsked(h.store.driver, h.config.baseUrl)) > 0);
      assert.deepEqual(ids(await get('/AuditEvent?altid=GH1&date=lt2020')), [event]);
      assert.deepEqual(ids(await get('/Patient?email=JOSE@EX.ORG')), [jose]);
      const verified = (await h.api.get('/AuditEvent/$verify')).body as { parameter: { name: string; valueBoolean?: boolean }[] };
      assert.equal(verified.parameter.find((p) => p.name === 'intact')?.valueBoolean, true, JSON.stringify(verified).slice(0, 500));
    });
  });

  describe('names and addresses match at the start of any word: family is "A portion of the family name of the patient"', () => {
    const q: Record<string, string> = {};
    let jonesConsent: string;
    before(async () => {
      const people: [string, Record<string, unknown>][] = [
        ['berg', { name: [{ family: 'van der Berg', given: ['Anna  Maria'] }] }],
        ['jones', { name: [{ family: 'Smith-Jones', given: ['Ola'] }] }],
        ['obrien', { name: [{ family: "O'Brien", given: ['Seán'] }], address: [{ line: ['221B Baker Street'], city: 'Milton Keynes' }] }],
        ['bergman', { name: [{ family: 'Bergman', given: ['Ingrid'] }] }],
        ['oneill', { name: [{ family: 'O\u2018Neill', given: ['Ros\u00b4in'] }] }],
        ['dash', { name: [{ family: '-', given: ['Unknown'] }] }],
      ];
      for (const [key, body] of people) q[key] = (await h.api.post('/Patient', patient(body))).body.id;
      jonesConsent = (await h.api.post('/Consent', consent(q.jones))).body.id;
    });
    const mine = (b: Bundle) => ids(b).filter((id) => Object.values(q).includes(id));
    const named = (...keys: string[]) => keys.map((k) => q[k]).sort();

    it('finds a word inside the value, from its start, whatever the case, accents, spaces and dashes', async () => {
      const cases: [string, string[]][] = [
        ['family=berg', ['berg', 'bergman']],
        ['family=der%20berg', ['berg']],
        ['family=van%20%20der', ['berg']],
        ['family=VAN%20DER%20B', ['berg']],
        ['family=jones', ['jones']],
        ['family=smith%20jones', ['jones']],
        ['family=smith-jones', ['jones']],
        ["family=o'brien", ['obrien']],
        ['family=obrien', ['obrien']],
        ['family=erg', []],
        ['family=brien', []],
        ['family=-', ['dash']],
        ['family=oneill', ['oneill']],
        ["family=o'neill", ['oneill']],
        ['family=neill', []],
        ['given=rosin', ['oneill']],
        ['given=maria', ['berg']],
        ['given=anna%20maria', ['berg']],
        ['given=sean', ['obrien']],
        ['name=jones', ['jones']],
        ['name=ingrid', ['bergman']],
        ['address=baker', ['obrien']],
        ['address=street', ['obrien']],
        ['address-city=keynes', []],
        ['address-city=milton%20k', ['obrien']],
        ['family=jones,berg', ['berg', 'bergman', 'jones']],
      ];
      for (const [query, expected] of cases) assert.deepEqual(mine(await get(`/Patient?${query}&_count=100`)).sort(), named(...expected), query);
    });

    it('are the parameters the definitions call "a portion of" a name or "a server defined search", and no others', () => {
      const worded = RESOURCE_TYPES.flatMap((t) => [...searchParams(t).values()].filter(matchesWords).map((d) => `${t}.${d.code}`));
      assert.deepEqual(worded.sort(), ['Patient.address', 'Patient.family', 'Patient.given', 'Patient.name']);
    });

    it('a name of one plain word needs no word rows (most do not); the others get one per word after the first, and one for a first word that differs from the value', async () => {
      const partRows = async (key: string) => {
        const rid = (await h.store.driver.get<{ rid: number | string }>("SELECT rid FROM resources WHERE type = 'Patient' AND id = ?", [q[key]]))!.rid;
        const rows = await h.store.driver.all<{ norm: string }>('SELECT norm FROM idx_string WHERE rid = ? AND pid = ? ORDER BY norm', [rid, paramId('Patient', 'family:part')]);
        return rows.map((r) => r.norm);
      };
      assert.deepEqual(await partRows('bergman'), []);
      assert.deepEqual(await partRows('berg'), ['berg', 'der berg']);
      assert.deepEqual(await partRows('jones'), ['jones', 'smith jones']);
      assert.deepEqual(await partRows('obrien'), ['obrien']);
    });

    it(':exact and :contains still compare the whole value, and _sort sorts by it', async () => {
      assert.deepEqual(mine(await get('/Patient?family:exact=van%20der%20Berg')), [q.berg]);
      assert.deepEqual(mine(await get('/Patient?family:exact=Berg')), []);
      assert.deepEqual(mine(await get('/Patient?family:contains=der%20b')), [q.berg]);
      assert.deepEqual(mine(await get('/Patient?family:contains=rg')).sort(), named('berg', 'bergman'));
      assert.deepEqual(ids(await get(`/Patient?_id=${q.berg},${q.bergman},${q.jones}&_sort=family`)), [q.bergman, q.jones, q.berg]);
      assert.deepEqual(mine(await get('/Patient?family:missing=false&family=jones')), [q.jones]);
    });

    it('but conditional criteria match at the start of the whole value: a conditional write never takes Smith-Jones for the Jones it names', async () => {
      const jones = patient({ name: [{ family: 'Jones', given: ['Ola'] }] });
      const created = await h.api.post('/Patient', jones, { 'If-None-Exist': 'family=jones&given=ola' });
      assert.equal(created.status, 201, 'If-None-Exist found no Jones, so it created one');
      assert.notEqual(created.body.id, q.jones);
      const updated = await h.api.put('/Patient?family=smith&given=ola', { ...patient({ name: [{ family: 'Smith-Jones', given: ['Ola'] }] }), gender: 'female' });
      assert.equal(updated.status, 200, 'Smith-Jones starts with smith');
      assert.equal(updated.body.id, q.jones);
      const chained = await h.api.post('/Consent', consent(q.jones), { 'If-None-Exist': 'patient.family=jones' });
      assert.equal(chained.status, 201, 'through a chain too: the Consent of Smith-Jones is not one of a Jones');
      await h.api.delete(`/Consent/${chained.body.id}`);
      await h.api.delete(`/Patient/${created.body.id}`);
    });

    it('through a chain too: Consent?patient.family=jones', async () => {
      assert.deepEqual(ids(await get('/Consent?patient.family=jones')), [jonesConsent]);
      assert.deepEqual(ids(await get('/Consent?patient.family=ones')), []);
    });

    it('migration 0031 rebuilds the Patients\' index rows, and only theirs', async () => {
      // As an older build left them: no word rows.
      await h.store.driver.run('DELETE FROM idx_string WHERE pid IN (?, ?, ?, ?)', ['family', 'given', 'name', 'address'].map((c) => paramId('Patient', `${c}:part`)));
      assert.deepEqual(mine(await get('/Patient?family=jones')), []);
      // A row no extraction makes, on an AuditEvent: rebuilding every type's rows would drop it.
      const event = await h.store.driver.get<{ rid: number | string }>("SELECT rid FROM resources WHERE type = 'AuditEvent' AND deleted = 0 LIMIT 1");
      assert.ok(event);
      await h.store.driver.run('INSERT INTO idx_string (pid, norm, exact, rid) VALUES (?, ?, ?, ?)', [1, 'sentinel', 'sentinel', Number(event.rid)]);
      await h.store.driver.run("DELETE FROM custodian_migrations WHERE id = '0031-name-and-address-words'");
      assert.deepEqual(await migrate(h.store.sequelize), ['0031-name-and-address-words']);
      const patients = await h.store.driver.get<{ n: number | string }>("SELECT COUNT(*) AS n FROM resources WHERE type = 'Patient' AND deleted = 0");
      assert.equal(await reindexIfAsked(h.store.driver, h.config.baseUrl), Number(patients!.n));
      assert.deepEqual(mine(await get('/Patient?family=jones')), [q.jones]);
      assert.ok(await h.store.driver.get("SELECT rid FROM idx_string WHERE pid = 1 AND norm = 'sentinel'"));
      await h.store.driver.run("DELETE FROM idx_string WHERE pid = 1 AND norm = 'sentinel'");
      assert.equal(await h.store.driver.get("SELECT value FROM custodian_state WHERE name = 'reindex'"), undefined);
    });
  });

  describe('_count=0', () => {
    it('is treated as _summary=count: the total of the matches, and no entries', async () => {
      // "if _count has the value 0, this shall be treated the same as _summary=count" and
      // "The _count parameter has no impact on the value of Bundle.total" (search.html#count)
      const b = await get('/Patient?family=abbott,baker,carter&_count=0');
      assert.equal(b.total, 3);
      assert.equal(b.entry, undefined);
      assert.equal((await get('/Patient?family=abbott,baker&_count=0')).total, 2);
      assert.equal((await get(`/Consent?patient=${p[0]}&_count=0`)).total, 1);
      assert.match(self(b), /_count=0/);
    });
  });
});

/**
 * `_summary=true` "SHOULD consist solely of all supported elements that are marked as 'summary'
 * in the base definition of the resource(s)" (search.html#summary), and FHIR JSON never holds an
 * empty object or array (ele-1): checked on every R4 example of the three types.
 */
describe('Search: _summary=true on the R4 examples', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policy: openAccessPolicy });
    await storeSpecExamples(h.api);
  });
  after(() => h.close());

  /** The paths of a base definition marked isSummary, and those that have children. */
  const definition = (type: string) => {
    const sd = repoJson<StructureDefinition>('profiles', 'r4', `StructureDefinition-${type}.json`);
    const paths = sd.snapshot!.element.map((e) => e.path);
    return {
      // and the mandatory top-level elements, which the definition of isSummary says must be
      // summary (R4 fails to mark AuditEvent.agent and .source)
      summary: new Set(sd.snapshot!.element.filter((e) => e.isSummary || (e.path.split('.').length === 2 && e.min! > 0)).map((e) => e.path)),
      parent: (path: string) => paths.some((q) => q.startsWith(path + '.')),
    };
  };

  /** Problems in one summarised resource: empty objects or arrays, and elements not marked summary. */
  const problems = (type: string, resource: Record<string, unknown>): string[] => {
    const def = definition(type);
    const found: string[] = [];
    const walk = (node: unknown, path: string, typed: boolean) => {
      if (node === null || typeof node !== 'object') return;
      if (Array.isArray(node)) {
        if (node.length === 0) found.push(`${path}: empty array`);
        node.forEach((n) => walk(n, path, typed));
        return;
      }
      const entries = Object.entries(node);
      if (entries.length === 0) found.push(`${path}: empty object`);
      for (const [key, value] of entries) {
        if (key === 'resourceType') continue;
        if (!typed) {
          walk(value, `${path}.${key}`, false);
          continue;
        }
        const name = key.replace(/^_/, '');
        // a choice element's name in JSON carries its type: deceasedBoolean is deceased[x]
        const element = [...def.summary].find((s) => s === `${path}.${name}` || (s.endsWith('[x]') && `${path}.${name}`.startsWith(s.slice(0, -3)) && /^[A-Z]/.test(`${path}.${name}`.slice(s.length - 3))));
        if (!element) found.push(`${path}.${name}: not a summary element`);
        // inside a data type (not a backbone of this resource) every element belongs
        walk(value, `${path}.${name}`, element !== undefined && def.parent(element));
      }
    };
    walk(resource, type, true);
    return found;
  };

  for (const type of ['Patient', 'Consent', 'AuditEvent']) {
    it(`every ${type} example comes out with summary elements only, and no empty object or array`, async () => {
      const res = await h.api.get(`/${type}?_summary=true&_count=100`);
      assert.equal(res.status, 200);
      const entries = (res.body as Bundle).entry!.filter((e) => e.search?.mode === 'match');
      assert.ok(entries.length >= examples(`r4/examples/${type}`).length);
      for (const e of entries) assert.deepEqual(problems(type, e.resource as unknown as Record<string, unknown>), [], `${type}/${e.resource!.id}`);
    });
  }

  it('Patient: contact and communication are not summary elements, link is', async () => {
    const r = (await h.api.get('/Patient?_id=example&_summary=true')).body.entry[0].resource;
    assert.equal(r.contact, undefined);
    assert.equal(r.communication, undefined);
    assert.ok(r.name && r.birthDate && r.meta.tag.some((t: { code: string }) => t.code === 'SUBSETTED'));
    const linked = (await h.api.get('/Patient?_id=pat1&_summary=true')).body.entry[0].resource;
    assert.deepEqual(linked.link, [{ other: { reference: 'Patient/pat2' }, type: 'seealso' }]);
  });
});
