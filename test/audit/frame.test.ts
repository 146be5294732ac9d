import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { AuditEvent } from 'fhir/r4';
import type { AccessContext } from '../../server/access/context';
import type { AccessNote, RequestFacts } from '../../server/audit/balp';
import { buildItems } from '../../server/audit/items';
import { chainLinks, GENESIS, linkHash } from '../../server/store/audit-chain';
import { AuditFramer, framedContent, hashFramed } from '../../server/store/audit-frame';
import { serializeAuditEvent } from '../../server/store/write';

/**
 * The journal keeps the events of a request about many patients as frames and bodies
 * (store/audit-frame.ts). What it keeps must be the event's stored JSON byte for byte, what
 * JSON.stringify gives for it, or the chain would hash one text and the trail serve another.
 * Checked here over the shapes the server builds: permitted and refused patients, a user, break
 * the glass, a batch whose parts failed, no query, events about no patient.
 */
describe('Audit: framed events are the same JSON as unframed ones', () => {
  const ctx = {
    clientId: 'national',
    clientName: 'National service',
    organization: { identifier: { system: 'https://fhir.nhs.uk/Id/ods-organization-code', value: 'X26' } },
    purposeOfUse: 'HOPERAT',
    tokenId: 'tok-1',
  } as unknown as AccessContext;
  const facts = (over: Partial<RequestFacts> = {}): RequestFacts => ({
    requestId: 'req-1',
    recorded: '2026-12-06T10:00:00.000Z',
    server: 'https://custodian.example.org/fhir',
    interaction: 'search-type',
    query: "GET https://custodian.example.org/fhir/Consent?_count=1000\nAccept: */*\nX-Request-Id: req-1 'quoted' \u00e9\u2603",
    clientAddress: '10.0.0.1',
    ctx,
    status: 200,
    ...over,
  });
  const permit = { effect: 'permit', reason: 'national-service', detail: 'a national service', consents: [] };
  const notesFor = (n: number, each: (i: number) => Partial<AccessNote> = () => ({})): AccessNote[] =>
    Array.from({ length: n }, (_, i) => ({ interaction: 'search-type', reference: `Consent/c-${i}/_history/1`, patients: [`p-${i}`], decision: permit, ...each(i) }) as AccessNote);

  const shapes: [string, RequestFacts, AccessNote[]][] = [
    ['a page of a Consent walk', facts(), notesFor(50)],
    [
      'some patients refused by their Consent, others permitted through one',
      facts(),
      notesFor(30, (i) =>
        i % 7 === 3
          ? { decision: { effect: 'deny', reason: 'consent-deny', detail: `Consent/k-${i} refuses "X26"`, consents: [`Consent/k-${i}`] } }
          : i % 5 === 0
            ? { decision: { effect: 'permit', reason: 'consent-permit', detail: 'permitted', consents: [`Consent/k-${i}`, 'Consent/shared'] } }
            : {},
      ),
    ],
    ['a user named by the token', facts({ ctx: { ...ctx, practitioner: 'Practitioner/dr-1' } as unknown as AccessContext }), notesFor(12)],
    ['a patient user (their own record among others)', facts({ ctx: { ...ctx, practitioner: 'Patient/p-3' } as unknown as AccessContext }), notesFor(12)],
    ['break the glass', facts({ interaction: 'search-system' }), notesFor(12, (i) => ({ decision: { effect: 'permit', reason: 'break-the-glass', detail: 'emergency', consents: [] }, interaction: i % 2 ? 'search-system' : 'read' }))],
    ['a batch whose parts failed', facts({ interaction: 'batch', query: undefined }), notesFor(12, (i) => ({ interaction: 'read', reference: `Patient/p-${i}/_history/2`, status: i % 3 ? undefined : 404 }))],
    ['a failed request', facts({ status: 500, message: 'the store failed: "disk full"' }), notesFor(10)],
    ['several patients per resource, and none', facts(), notesFor(10, (i) => ({ patients: i % 4 === 0 ? [] : [`p-${i}`, `p-${i + 1}`] }))],
    ['an unauthenticated request', facts({ ctx: undefined, presented: { clientId: 'who' }, status: 401 }), notesFor(10)],
  ];

  for (const [name, f, notes] of shapes) {
    it(name, () => {
      const events = buildItems([{ facts: f, notes }]);
      assert.ok(events.length > 8, `${events.length} events`);
      const framer = new AuditFramer(events);
      const now = Date.parse('2026-12-06T10:00:01.234Z');
      const plain = events.map((e) => serializeAuditEvent(e, now, 'https://custodian.example.org/fhir', false));
      const framed = events.map((e) => serializeAuditEvent(e, now, 'https://custodian.example.org/fhir', false, framer));
      for (const [i, e] of framed.entries()) {
        assert.ok(e.framed, `event ${i} is framed`);
        assert.equal(e.content, plain[i].content, `event ${i}: the same JSON`);
        assert.equal(framedContent(e.id, e.framed.frame, e.framed.body), e.content);
        assert.equal(e.patient, plain[i].patient, 'the same queue key');
        assert.ok(e.framed.body.length < e.content.length / 2, `event ${i}: the body is the smaller part (${e.framed.body.length} of ${e.content.length})`);
        const hash = hashFramed(createHash('sha256').update('x\n'), e.id, e.framed).digest('hex');
        assert.equal(hash, createHash('sha256').update(`x\n${e.content}`).digest('hex'), 'hashed piece by piece: the same bytes');
      }
      // The chain over framed events is the chain over their whole text.
      assert.deepEqual(chainLinks({ seq: 0, hash: GENESIS }, framed).links, chainLinks({ seq: 0, hash: GENESIS }, plain).links);
      // A frame's events are consecutive (what lets the journal's moves delete it once past them).
      const frames = framed.map((e) => e.framed!.frame);
      assert.equal(new Set(frames).size, frames.filter((fr, i) => i === 0 || frames[i - 1] !== fr).length, 'each frame is one run');
    });
  }

  it('a page of a walk is one frame; refused patients break it into runs, each event in the run of its neighbours', () => {
    const one = buildItems([{ facts: facts(), notes: notesFor(100) }]);
    const framer1 = new AuditFramer(one);
    assert.equal(new Set(one.map((e) => framer1.frame(e, 0)!.frame)).size, 1);
    const notes = notesFor(100, (i) => (i % 10 === 5 ? { decision: { effect: 'deny', reason: 'national-opt-out', detail: 'the patient opted out', consents: [] } } : {}));
    const events = buildItems([{ facts: facts(), notes }]);
    const framer = new AuditFramer(events);
    const frames = events.map((e) => framer.frame(e, 0)!.frame);
    // A frame's events are consecutive (the journal's moves rely on it): never back to an earlier one.
    const runs = frames.filter((f, i) => i === 0 || frames[i - 1] !== f).length;
    assert.equal(new Set(frames).size, runs, 'each frame is one run of consecutive events');
    assert.equal(runs, 21, 'permitted, refused, permitted, …');
    assert.match(frames[5].head, /"outcome":"8"/);
    assert.equal(frames[5].head, frames[15].head, 'refusals alike have the same head');
  });

  it('what cannot be framed is not: meta present, an id JSON would escape, entity not last or absent, no neighbour', () => {
    const [a, b] = buildItems([{ facts: facts(), notes: notesFor(2) }]);
    const framer = new AuditFramer([a, b]);
    assert.ok(framer.frame(a, 0));
    assert.equal(framer.frame({ ...a }, 0), undefined, 'an event the framer was not given');
    const withMeta = { ...a, meta: { tag: [{ code: 'x' }] } } as AuditEvent;
    const oddId = { ...a, id: 'a"b' } as AuditEvent;
    const { entity, ...rest } = a;
    const entityFirst = { entity, ...rest } as AuditEvent;
    const noEntity = rest as AuditEvent;
    const f2 = new AuditFramer([withMeta, oddId, entityFirst, noEntity]);
    for (const e of [withMeta, oddId, entityFirst, noEntity]) {
      assert.equal(f2.frame(e, 0), undefined);
      // Unframed, it is stored whole, as ever.
      const s = serializeAuditEvent(e, 0, undefined, false, f2);
      assert.equal(s.framed, undefined);
      assert.equal(linkHash(GENESIS, 1, s.id, s.content), chainLinks({ seq: 0, hash: GENESIS }, [s]).links[0].hash);
    }
  });
});
