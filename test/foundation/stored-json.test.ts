import assert from 'node:assert/strict';
import type { Bundle, Resource } from 'fhir/r4';
import { bodyJson, storedResource } from '../../server/fhir/stored-json';
import { examples, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * Search pages send their resources out as the store holds them (fhir/stored-json.ts) instead
 * of serialising them again: the response must be byte for byte what JSON.stringify would write.
 */
describe('Foundation: resources sent out as stored', () => {
  const ours = (r: Resource) => ['Patient', 'Consent', 'AuditEvent'].includes(r.resourceType);
  const all = [
    ...examples('r4/examples/Patient'),
    ...examples('r4/examples/Consent'),
    ...examples('r4/examples/AuditEvent'),
    ...examples('ukcore/json/examples', ours),
    ...examples('ihe/balp/json/instances', ours),
  ].map(([, r]) => r);

  /** A searchset as the search builds it: every resource its stored text, unparsed. */
  function page(resources: readonly Resource[]): { stored: Bundle; parsed: Bundle } {
    const bundle = (resource: (r: Resource) => Resource): Bundle => ({
      resourceType: 'Bundle',
      type: 'searchset',
      link: [{ relation: 'self', url: 'http://x/Patient?name=%22quoted%22' }],
      entry: resources.map((r) => ({ fullUrl: `http://x/${r.resourceType}/${r.id}`, resource: resource(r), search: { mode: 'match' as const } })),
    });
    return { stored: bundle((r) => storedResource(JSON.stringify(r))), parsed: bundle((r) => r) };
  }

  it(`writes exactly what JSON.stringify writes of the parsed resources, for all ${all.length} examples of the shared material`, () => {
    assert.ok(all.length > 90, `${all.length} examples`);
    const { stored, parsed } = page(all);
    assert.equal(bodyJson(stored, false), JSON.stringify(parsed));
    assert.equal(bodyJson(stored, true), JSON.stringify(parsed, null, 2), 'pretty-printed, the resources are parsed and indented');
  });

  it('and for text that needs escaping: quotes, backslashes, controls, non-ASCII, emoji, a lone surrogate', () => {
    const odd = ['"quoted"', 'back\\slash', 'tab\tnew\nline\u0001', 'Zoë Ångström', '😀', '\ud800', '</script>', ':0', '"'];
    const { stored, parsed } = page(odd.map((text, i) => patient({ id: `odd-${i}`, name: [{ family: text, given: [text] }] })));
    assert.equal(bodyJson(stored, false), JSON.stringify(parsed));
  });

  it('the stored text is what goes out, wherever it is nested; serialised any other way it is the resource', () => {
    const text = '{"resourceType":"Basic", "id":"stored"}';
    const nested = { resourceType: 'Bundle', entry: [{ resource: { resourceType: 'Bundle', entry: [{ resource: storedResource(text) }, { resource: storedResource(text) }] } }] };
    assert.equal(bodyJson(nested, false), `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Bundle","entry":[{"resource":${text}},{"resource":${text}}]}}]}`);
    assert.equal(JSON.stringify({ resource: storedResource(text) }), '{"resource":{"resourceType":"Basic","id":"stored"}}');
    // A client's string that looks like a placeholder is only a string.
    assert.equal(bodyJson({ a: ':0', b: '"x:0"', c: storedResource('{}') }, false), '{"a":":0","b":"\\"x:0\\"","c":{}}');
  });

  describe('through the HTTP stack', () => {
    let h: Harness;
    before(async () => {
      h = await startHarness();
    });
    after(() => h.close());

    it('a search page is the JSON.stringify of its Bundle, its resources as read; shaped ones are shaped', async () => {
      const names = ['Zoë "Q" O\'Brien', 'back\\slash', '😀 emoji'];
      const ids: string[] = [];
      for (const family of names) ids.push((await h.api.post('/Patient', patient({ name: [{ family, given: ['Stored'] }] }))).body.id);
      const res = await h.api.get(`/Patient?_id=${ids.join(',')}&_sort=_id`);
      assert.equal(res.status, 200);
      assert.equal(res.text, JSON.stringify(JSON.parse(res.text)), 'well-formed, and as JSON.stringify writes it');
      assert.equal(res.body.entry.length, 3);
      for (const e of res.body.entry) assert.deepEqual(e.resource, (await h.api.get(`/Patient/${e.resource.id}`)).body);
      // The bytes are the stored ones: stored with spaces (as no write of this server stores them), they go out so.
      const rid = (await h.store.driver.get<{ rid: number }>("SELECT rid FROM resources WHERE type = 'Patient' AND id = ?", [ids[0]]))!.rid;
      const stored = (await h.store.driver.get<{ content: string }>('SELECT content FROM resources WHERE rid = ?', [rid]))!.content;
      const spaced = JSON.stringify(JSON.parse(stored), null, 1);
      await h.store.driver.run('UPDATE resources SET content = ? WHERE rid = ?', [spaced, rid]);
      const again = await h.api.get(`/Patient?_id=${ids[0]}`);
      assert.ok(again.text.includes(`"resource":${spaced},`), 'the stored text, as stored');
      assert.deepEqual(again.body.entry[0].resource, JSON.parse(stored));
      await h.store.driver.run('UPDATE resources SET content = ? WHERE rid = ?', [stored, rid]);
      const shaped = await h.api.get(`/Patient?_id=${ids.join(',')}&_elements=name`);
      for (const e of shaped.body.entry) {
        assert.equal(e.resource.gender, undefined);
        assert.ok(e.resource.meta.tag.some((t: { code: string }) => t.code === 'SUBSETTED'));
      }
    });
  });
});
