import assert from 'node:assert/strict';
import type { Bundle, BundleEntry } from 'fhir/r4';
import type { AccessContext } from '../../server/access/context';
import type { Api } from '../support/api';
import { ENGINE } from '../support/db';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const BASE = 'http://custodian.test/fhir';
const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
const key = (e: BundleEntry) => `${e.fullUrl!.replace(`${BASE}/Consent/`, '')}|${e.response!.etag!.replace(/\D/g, '')}`;

/**
 * The feed's guarantee under concurrency: a reader walking `_history?_sort=_lastUpdated` page by
 * page while others write sees every version exactly once, in commit order, and a version still
 * being committed can never be overtaken by a later one (so a saved cursor never skips it).
 */
describe('Feed: concurrent writers, one reader walking the history', function () {
  this.timeout(60000);
  let h: Harness;
  let gp: Api;
  let national: Api;
  let pid: string;

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['HOPERAT'], roles: ['national-service'] },
      ],
    });
    gp = await h.as('gp');
    national = await h.as('national', { purpose: 'HOPERAT' });
    pid = (await gp.post('/Patient', patient({ managingOrganization: { identifier: { system: ODS, value: 'GP1' } } }))).body.id;
  });
  after(() => h.close());

  /** Every Consent version in the database, as `id|version`, in commit order. */
  async function committed(): Promise<string[]> {
    const rows = await h.store.driver.all<{ id: string; version_id: number | string }>("SELECT id, version_id FROM resource_versions WHERE type = 'Consent' ORDER BY seq");
    return rows.map((r) => `${r.id}|${Number(r.version_id)}`);
  }

  async function page(url: string): Promise<{ entries: string[]; next: string }> {
    const res = await national.get(url);
    assert.equal(res.status, 200, res.text.slice(0, 300));
    const b = res.body as Bundle;
    return { entries: (b.entry ?? []).map(key), next: b.link!.find((l) => l.relation === 'next')!.url.replace(BASE, '') };
  }

  it('four writers create and update Consents while the reader walks: every version exactly once, in commit order', async () => {
    const seen: string[] = [];
    let url = '/Consent/_history?_sort=_lastUpdated&_count=7';
    let writing = true;
    const writer = async (w: number) => {
      for (let i = 0; i < 8; i++) {
        const created = await gp.post('/Consent', consent(pid, { identifier: [{ system: 'urn:test:writer', value: `${w}-${i}` }] }));
        assert.equal(created.status, 201, created.text);
        const id = created.body.id;
        assert.equal((await gp.put(`/Consent/${id}`, { ...consent(pid), id, status: 'inactive' })).status, 200);
        if (i % 3 === 0) assert.equal((await gp.delete(`/Consent/${id}`)).status, 204);
      }
    };
    const reader = async () => {
      // Walk while the writers run, then once more to the end.
      for (;;) {
        const done = !writing;
        const p = await page(url);
        seen.push(...p.entries);
        url = p.next;
        if (p.entries.length === 0 && done) return;
      }
    };
    const writers = Promise.all([0, 1, 2, 3].map(writer)).finally(() => (writing = false));
    await Promise.all([writers, reader()]);
    const truth = await committed();
    assert.equal(truth.length, 4 * 8 * 2 + 4 * 3);
    assert.equal(new Set(seen).size, seen.length, 'no version was seen twice');
    assert.deepEqual(seen, truth, 'every version, in commit order');
  });

  it('a version still being committed is never overtaken: the reader sees neither it nor anything after it until it commits', async () => {
    const ctx: AccessContext = { requestId: 'feed-test', clientId: 'national', roles: ['national-service'], scopes: ['system/Consent.rs'], purposeOfUse: 'HOPERAT' };
    const walkFrom = async (cursor: number) => {
      const p = await h.app.gate.history(ctx, { types: ['Consent'], afterSeq: cursor, order: 'asc', limit: 1000 });
      return { ids: p.entries.map((v) => v.id), cursor: p.scannedTo ?? cursor };
    };
    // Other commits may land before T1 begins (the audit trail's own, moved from its journal in
    // the background, take history seqs too); those a cursor may pass. Settled first anyway.
    await h.store.auditIndex.materialized();
    const start = await walkFrom(0);
    const writer = { clientId: 'gp', organization: `${ODS}|GP1` };
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let flushed!: () => void;
    const isFlushed = new Promise<void>((r) => (flushed = r));
    // T1 takes its commit sequence number (on PostgreSQL: under the commit lock) and then waits before COMMIT.
    const t1 = h.store.transaction(async (tx) => {
      await tx.create('Consent', { ...consent(pid), id: 'in-flight-1' }, writer);
      await tx.flush();
      flushed();
      await held;
    });
    await isFlushed;
    // T2 starts later and would like to commit first.
    let t2Done = false;
    const t2 = h.store
      .transaction((tx) => tx.create('Consent', { ...consent(pid), id: 'later-2' }, writer))
      .then(() => {
        t2Done = true;
      });
    if (ENGINE === 'postgres') {
      // Wait until T2 is queued behind T1's commit lock.
      for (let i = 0; i < 500; i++) {
        const row = await h.store.driver.get<{ n: number | string }>("SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
        if (Number(row!.n) > 0) break;
        await new Promise((r) => setImmediate(r));
      }
    } else {
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    }
    let during: { ids: string[]; cursor: number };
    try {
      assert.equal(t2Done, false, 'the later transaction cannot commit ahead of the one in flight');
      during = await walkFrom(start.cursor);
      assert.deepEqual(during.ids, [], 'nothing past the saved cursor is visible yet');
    } finally {
      // Whatever failed, T1 ends, or the harness could never close.
      release();
      await Promise.all([t1, t2]);
    }
    const seqOf = async (id: string) => Number((await h.store.driver.get<{ seq: number | string }>("SELECT seq FROM resource_versions WHERE type = 'Consent' AND id = ?", [id]))!.seq);
    assert.ok(during.cursor < (await seqOf('in-flight-1')), `the cursor (${during.cursor}) did not move past the version in flight`);
    const after = await walkFrom(during.cursor);
    assert.deepEqual(after.ids, ['in-flight-1', 'later-2'], 'both arrive, in commit order, after the cursor');
  });
});
