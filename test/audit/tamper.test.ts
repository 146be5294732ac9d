import assert from 'node:assert/strict';
import { linkHash } from '../../server/store/audit-chain';
import { ENGINE } from '../support/db';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * Editing, deleting, reordering or slipping in rows directly in the database is caught by
 * $verify, which names the first bad link.
 */
describe(`Audit: tampering with the trail is detected (${ENGINE})`, () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
    const id = (await h.api.post('/Patient', patient())).body.id;
    for (let i = 0; i < 6; i++) await h.api.get(`/Patient/${id}`);
  });
  after(() => h.close());

  const q = () => h.store.driver;
  async function verify(): Promise<Record<string, unknown>> {
    const res = await h.api.get('/AuditEvent/$verify');
    assert.equal(res.status, 200);
    return Object.fromEntries(res.body.parameter.map((p: Record<string, unknown>) => [p.name, p.valueBoolean ?? p.valueInteger ?? p.valueCode ?? p.valueString ?? (p.valueReference as { reference: string })?.reference]));
  }
  /** The chain row of link `seq`: its event and stored content. */
  async function link(seq: number) {
    return (await q().get<{ rid: number; event_id: string; content: string }>('SELECT c.rid, c.event_id, r.content FROM audit_chain c JOIN resources r ON r.rid = c.rid WHERE c.seq = ?', [seq]))!;
  }
  /** Undo a tampering step so the next one starts from an intact chain. */
  async function restore(fn: () => Promise<void>) {
    await fn();
    assert.equal((await verify()).intact, true, 'restored');
  }

  it('is intact to begin with', async () => {
    const v = await verify();
    assert.equal(v.intact, true);
    assert.ok((v.links as number) >= 7, String(v.links));
  });

  it('an edited AuditEvent: hash-mismatch at its link', async () => {
    const l = await link(3);
    const edited = l.content.replace('"outcome":"0"', '"outcome":"4"');
    assert.notEqual(edited, l.content);
    await q().run('UPDATE resources SET content = ? WHERE rid = ?', [edited, l.rid]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link, v.event], [false, 'hash-mismatch', 3, `AuditEvent/${l.event_id}`]);
    await restore(async () => void (await q().run('UPDATE resources SET content = ? WHERE rid = ?', [l.content, l.rid])));
  });

  it('a deleted chain row: missing-link', async () => {
    const row = (await q().get<Record<string, unknown>>('SELECT seq, rid, event_id, prev_hash, hash FROM audit_chain WHERE seq = 4'))!;
    await q().run('DELETE FROM audit_chain WHERE seq = 4');
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'missing-link', 4]);
    await restore(async () => void (await q().run('INSERT INTO audit_chain (seq, rid, event_id, prev_hash, hash) VALUES (?, ?, ?, ?, ?)', [row.seq, row.rid, row.event_id, row.prev_hash, row.hash])));
  });

  it('a deleted AuditEvent: event-missing at its link', async () => {
    const l = await link(5);
    const row = (await q().get<Record<string, unknown>>('SELECT rid, type, id, version_id, last_updated, deleted, content, created_by, creator_org FROM resources WHERE rid = ?', [l.rid]))!;
    await q().run('DELETE FROM resources WHERE rid = ?', [l.rid]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'event-missing', 5]);
    await restore(async () => {
      await q().run('INSERT INTO resources (rid, type, id, version_id, last_updated, deleted, content, created_by, creator_org) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', [
        row.rid, row.type, row.id, row.version_id, row.last_updated, row.deleted, row.content, row.created_by, row.creator_org,
      ]);
    });
  });

  it('two links swapped: broken-link at the first of them', async () => {
    const a = (await q().get<Record<string, unknown>>('SELECT rid, event_id, prev_hash, hash FROM audit_chain WHERE seq = 2'))!;
    const b = (await q().get<Record<string, unknown>>('SELECT rid, event_id, prev_hash, hash FROM audit_chain WHERE seq = 3'))!;
    const put = (seq: number, r: Record<string, unknown>) => q().run('UPDATE audit_chain SET rid = ?, event_id = ?, prev_hash = ?, hash = ? WHERE seq = ?', [r.rid, r.event_id, r.prev_hash, r.hash, seq]);
    await q().run('UPDATE audit_chain SET rid = -1 WHERE seq = 2'); // free the unique rid while swapping
    await put(3, a);
    await put(2, b);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'broken-link', 2]);
    await restore(async () => {
      await q().run('UPDATE audit_chain SET rid = -1 WHERE seq = 3');
      await put(2, a);
      await put(3, b);
    });
  });

  it('an AuditEvent slipped in without a link: not-chained', async () => {
    const l = await link(1);
    await q().run("INSERT INTO resources (type, id, version_id, last_updated, deleted, content) VALUES ('AuditEvent', 'smuggled', 1, 0, 0, ?)", [l.content.replace(l.event_id, 'smuggled')]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.event], [false, 'not-chained', 'AuditEvent/smuggled']);
    await restore(async () => void (await q().run("DELETE FROM resources WHERE type = 'AuditEvent' AND id = 'smuggled'")));
  });

  it('a rewritten chain (content and hash both edited) still breaks at the next link', async () => {
    const l = await link(6);
    const edited = l.content.replace('"outcome":"0"', '"outcome":"8"');
    const row = (await q().get<{ prev_hash: string; hash: string }>('SELECT prev_hash, hash FROM audit_chain WHERE seq = 6'))!;
    await q().run('UPDATE resources SET content = ? WHERE rid = ?', [edited, l.rid]);
    await q().run('UPDATE audit_chain SET hash = ? WHERE seq = 6', [linkHash(row.prev_hash, 6, l.event_id, edited)]);
    const v = await verify();
    assert.deepEqual([v.intact, v.problem, v.link], [false, 'broken-link', 7]);
    await restore(async () => {
      await q().run('UPDATE resources SET content = ? WHERE rid = ?', [l.content, l.rid]);
      await q().run('UPDATE audit_chain SET hash = ? WHERE seq = 6', [row.hash]);
    });
  });
});
