import assert from 'node:assert/strict';
import type { Bundle, BundleEntry } from 'fhir/r4';
import { FeedCursorSeal } from '../../server/gate/cursor';
import { Store } from '../../server/store/store';
import type { Api } from '../support/api';
import { freshDatabase } from '../support/db';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const BASE = 'http://custodian.test/fhir';
const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
const org = (code: string) => ({ identifier: { system: ODS, value: code } });

/** Follows `next` links forward until a page comes back empty; returns every entry and the last next link. */
export async function walk(api: Api, first: string, max = 1000): Promise<{ entries: BundleEntry[]; next: string; pages: number }> {
  const entries: BundleEntry[] = [];
  let url = first;
  for (let pages = 1; pages <= max; pages++) {
    const res = await api.get(url);
    assert.equal(res.status, 200, `${url}: ${res.text.slice(0, 300)}`);
    const b = res.body as Bundle;
    const next = b.link?.find((l) => l.relation === 'next')?.url;
    assert.ok(next, 'a forward page always has a next link');
    const page = (b.entry ?? []).filter((e) => e.resource?.resourceType !== 'OperationOutcome');
    entries.push(...page);
    url = next.replace(BASE, '');
    if (page.length === 0) return { entries, next: url, pages };
  }
  throw new Error('the walk did not end');
}

const key = (e: BundleEntry) => `${e.fullUrl!.replace(`${BASE}/`, '')}|${e.response!.etag}`;

describe('Feed: the Consent history walked forwards in commit order', () => {
  let h: Harness;
  let gp: Api;
  let national: Api;
  let hospital: Api;
  const start = Date.UTC(2031, 0, 1, 9, 0, 0);
  const ids: Record<string, string> = {};

  before(async () => {
    h = await startHarness({
      frozenAt: start,
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['HOPERAT'], roles: ['national-service'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Consent.rs'], purposes: ['TREAT'] },
      ],
    });
    gp = await h.as('gp');
    national = await h.as('national', { purpose: 'HOPERAT' });
    hospital = await h.as('hospital');
    ids.p = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id;
    // Timestamps deliberately out of commit order: the feed must not care.
    h.clock.now = start + 60000;
    ids.a = (await gp.post('/Consent', consent(ids.p))).body.id;
    h.clock.now = start + 1000;
    ids.b = (await gp.post('/Consent', consent(ids.p, { provision: { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] } }))).body.id;
    h.clock.now = start + 120000;
    await gp.put(`/Consent/${ids.a}`, { ...consent(ids.p), id: ids.a, status: 'inactive' });
    await gp.delete(`/Consent/${ids.a}`);
  });
  after(() => h.close());

  it('lists every version oldest commit first with _sort=_lastUpdated, deletions included', async () => {
    const { entries } = await walk(national, '/Consent/_history?_sort=_lastUpdated&_count=2');
    assert.deepEqual(entries.map(key), [`Consent/${ids.a}|W/"1"`, `Consent/${ids.b}|W/"1"`, `Consent/${ids.a}|W/"2"`, `Consent/${ids.a}|W/"3"`]);
    assert.equal(entries[3].request!.method, 'DELETE');
    assert.equal(entries[3].resource, undefined);
    assert.equal(entries[2].resource!.id, ids.a);
  });

  it('always offers a next link forwards: a walker resumes there and sees only what came after', async () => {
    const { next } = await walk(national, '/Consent/_history?_sort=_lastUpdated&_count=3');
    const empty = (await national.get(next)).body as Bundle;
    assert.equal(empty.entry, undefined);
    const again = empty.link!.find((l) => l.relation === 'next')!.url.replace(BASE, '');
    const c = (await gp.post('/Consent', consent(ids.p))).body.id;
    // Nothing new: the empty page's next link resumes where the saved one does.
    for (const from of [next, again]) assert.deepEqual((await walk(national, from)).entries.map(key), [`Consent/${c}|W/"1"`]);
    await gp.delete(`/Consent/${c}`);
  });

  it('newest first stays the default, and its last page has no next link', async () => {
    const b = (await national.get('/Consent/_history?_count=100')).body as Bundle;
    assert.equal(b.entry![0].request!.method, 'DELETE');
    assert.equal(b.link!.find((l) => l.relation === 'next'), undefined);
  });

  it('_summary=count counts exactly the versions of the window the client may see', async () => {
    const all = await walk(national, '/Consent/_history?_sort=_lastUpdated&_count=1000');
    const count = (await national.get('/Consent/_history?_sort=_lastUpdated&_summary=count')).body as Bundle;
    assert.equal(count.type, 'history');
    assert.equal(count.total, all.entries.length);
    assert.equal(count.entry, undefined);
    // a window closed by two cursors
    const first = (await national.get('/Consent/_history?_sort=_lastUpdated&_count=1')).body as Bundle;
    const c1 = new URL(first.link!.find((l) => l.relation === 'next')!.url).searchParams.get('_cursor')!;
    const second = (await national.get(`/Consent/_history?_sort=_lastUpdated&_count=2&_cursor=${c1}`)).body as Bundle;
    const c3 = new URL(second.link!.find((l) => l.relation === 'next')!.url).searchParams.get('_cursor')!;
    assert.equal(((await national.get(`/Consent/_history?_sort=_lastUpdated&_cursor=${c1}&_cursor-end=${c3}&_summary=count`)).body as Bundle).total, 2);
    const window = (await national.get(`/Consent/_history?_sort=_lastUpdated&_cursor=${c1}&_cursor-end=${c3}&_count=10`)).body as Bundle;
    assert.deepEqual(window.entry!.map(key), second.entry!.map(key));
    assert.equal(window.link!.find((l) => l.relation === 'next'), undefined, 'a closed window ends');
  });

  it('hides what the client may not see, in pages and in counts', async () => {
    // The hospital is named by Consent b only; the deletion of a (never visible to it) stays hidden too.
    const { entries } = await walk(hospital, '/Consent/_history?_sort=_lastUpdated&_count=1');
    assert.deepEqual(entries.map(key), [`Consent/${ids.b}|W/"1"`]);
    assert.equal(((await hospital.get('/Consent/_history?_sort=_lastUpdated&_summary=count')).body as Bundle).total, 1);
  });

  it('a cursor does not show where versions the client may not see lie, whatever window it came from', async () => {
    // For the hospital only Consent b is visible; a's versions (written at +60 s, +120 s, and its
    // deletion) are not. Each probe gets a cursor from a window that keeps or drops a's versions,
    // then replays it without the window: what comes back must not depend on the hidden versions.
    const replayFrom = async (first: string) => {
      const b = (await hospital.get(first)).body as Bundle;
      const cursor = new URL(b.link!.find((l) => l.relation === 'next')!.url).searchParams.get('_cursor')!;
      return ((await hospital.get(`/Consent/_history?_sort=_lastUpdated&_count=10&_cursor=${cursor}`)).body as Bundle).entry?.map(key) ?? [];
    };
    const at = (ms: number) => encodeURIComponent(new Date(start + ms).toISOString());
    const keepsHidden = await replayFrom(`/Consent/_history?_sort=_lastUpdated&_since=${at(90000)}`);
    const dropsHidden = await replayFrom(`/Consent/_history?_sort=_lastUpdated&_since=${at(10 * 60000)}`);
    assert.deepEqual(keepsHidden, dropsHidden, 'the _since oracle');
    const atWindow = await replayFrom(`/Consent/_history?_sort=_lastUpdated&_at=${at(90000)}`);
    assert.deepEqual(atWindow, dropsHidden, 'the _at oracle');
  });

  it('_since filters by lastUpdated, the cursor still walks commit order', async () => {
    const { entries } = await walk(national, `/Consent/_history?_sort=_lastUpdated&_since=${new Date(start + 30000).toISOString()}`);
    assert.deepEqual(entries.map(key).slice(0, 3), [`Consent/${ids.a}|W/"1"`, `Consent/${ids.a}|W/"2"`, `Consent/${ids.a}|W/"3"`]);
  });

  it('_count=0 answers an empty page, and a forward cursor does not move', async () => {
    const first = (await national.get('/Consent/_history?_sort=_lastUpdated&_count=1')).body as Bundle;
    const c1 = new URL(first.link!.find((l) => l.relation === 'next')!.url).searchParams.get('_cursor')!;
    for (const q of ['_count=0', '_sort=_lastUpdated&_count=0', `_sort=_lastUpdated&_count=0&_cursor=${c1}`]) {
      const res = await national.get(`/Consent/_history?${q}`);
      assert.equal(res.status, 200, `${q}: ${res.text}`);
      assert.equal(res.body.entry, undefined);
    }
    const next = ((await national.get(`/Consent/_history?_sort=_lastUpdated&_count=0&_cursor=${c1}`)).body as Bundle).link!.find((l) => l.relation === 'next')!.url;
    const moved = new URL(next).searchParams.get('_cursor')!;
    assert.deepEqual((await walk(national, `/Consent/_history?_sort=_lastUpdated&_cursor=${moved}`)).entries.map(key), (await walk(national, `/Consent/_history?_sort=_lastUpdated&_cursor=${c1}`)).entries.map(key));
  });

  it('seals its cursors: opaque, tamper-evident, never a search cursor, and blind to the writes between two of them', async () => {
    const cursors: string[] = [];
    let url = '/Consent/_history?_sort=_lastUpdated&_count=1';
    for (let i = 0; i < 3; i++) {
      const b = (await national.get(url)).body as Bundle;
      const next = b.link!.find((l) => l.relation === 'next')!.url;
      cursors.push(new URL(next).searchParams.get('_cursor')!);
      url = next.replace(BASE, '');
    }
    for (const c of cursors) {
      assert.match(c, /^[A-Za-z0-9_-]{59}$/);
      assert.ok(!/^\d+$/.test(c), 'not a bare commit sequence');
    }
    assert.equal(new Set(cursors).size, 3);
    // The same position sealed again is another text (so whether a cursor moved past versions the
    // client may not see cannot be told by comparing two), and resumes at the same place.
    const again = (await national.get('/Consent/_history?_sort=_lastUpdated&_count=1')).body as Bundle;
    const cursor0 = new URL(again.link!.find((l) => l.relation === 'next')!.url).searchParams.get('_cursor')!;
    assert.notEqual(cursor0, cursors[0]);
    const from = async (c: string) => ((await national.get(`/Consent/_history?_sort=_lastUpdated&_count=5&_cursor=${c}`)).body as Bundle).entry!.map(key);
    assert.deepEqual(await from(cursor0), await from(cursors[0]));
    // Every character of a cursor is covered by its tag.
    const flipped = cursors[1].slice(0, 30) + (cursors[1][30] === 'A' ? 'B' : 'A') + cursors[1].slice(31);
    const extra = (await gp.post('/Consent', consent(ids.p))).body.id;
    const search = (await national.get('/Consent?_count=1')).body as Bundle;
    const searchCursor = new URL(search.link!.find((l) => l.relation === 'next')!.url).searchParams.get('_cursor')!;
    await gp.delete(`/Consent/${extra}`);
    for (const bad of [flipped, searchCursor, String(Number.MAX_SAFE_INTEGER), '1']) {
      const res = await national.get(`/Consent/_history?_sort=_lastUpdated&_cursor=${bad}`);
      assert.equal(res.status, 400, bad);
      assert.match(res.body.issue[0].diagnostics, /_cursor/);
      const end = await national.get(`/Consent/_history?_sort=_lastUpdated&_cursor=${cursors[0]}&_cursor-end=${bad}`);
      assert.equal(end.status, 400, `_cursor-end=${bad}`);
    }
    // Nor does a feed cursor open a search.
    const res = await national.get(`/Consent?_count=1&_cursor=${cursors[1]}`);
    assert.equal(res.status, 400);
    // '0', the start of the feed, is the one position given in the clear.
    const fromStart = (await national.get('/Consent/_history?_sort=_lastUpdated&_count=1&_cursor=0')).body as Bundle;
    assert.deepEqual(fromStart.entry!.map(key), [`Consent/${ids.a}|W/"1"`]);
  });

  it('refuses a bad _sort, _cursor or _cursor-end with a 400 OperationOutcome', async () => {
    for (const q of ['_sort=status', '_sort=_id', '_cursor=abc', '_cursor=-1', '_cursor=7', '_sort=_lastUpdated&_cursor-end=x', '_cursor-end=5']) {
      const res = await national.get(`/Consent/_history?${q}`);
      assert.equal(res.status, 400, q);
      assert.equal(res.body.resourceType, 'OperationOutcome');
      assert.match(res.body.issue[0].diagnostics, /_sort|_cursor/);
    }
    // _cursor-end closes a forward window only.
    const first = (await national.get('/Consent/_history?_sort=_lastUpdated&_count=1')).body as Bundle;
    const c1 = new URL(first.link!.find((l) => l.relation === 'next')!.url).searchParams.get('_cursor')!;
    const backwards = await national.get(`/Consent/_history?_cursor-end=${c1}`);
    assert.equal(backwards.status, 400);
    assert.match(backwards.body.issue[0].diagnostics, /_cursor-end closes a forward window/);
  });
});

describe('Feed: cursors handed out before they were sealed', () => {
  const key = Buffer.alloc(32, 7);

  it('bare sequence numbers up to the recorded cut-over still open, none above it; sealed ones open wherever they point', () => {
    const seal = new FeedCursorSeal(key, 100);
    assert.equal(seal.open('0', '_cursor'), 0);
    assert.equal(seal.open('57', '_cursor'), 57);
    assert.equal(seal.open('100', '_cursor'), 100);
    for (const bad of ['101', '999999999999999']) assert.throws(() => seal.open(bad, '_cursor'), /not a history cursor this server issued/);
    assert.equal(seal.open(seal.seal(123456), '_cursor'), 123456);
    assert.throws(() => new FeedCursorSeal(key, 0).open('1', '_cursor-end'), /'_cursor-end'/);
    assert.throws(() => new FeedCursorSeal(Buffer.alloc(32, 8), 100).open(seal.seal(5), '_cursor'), /not a history cursor/, 'another database\'s key');
  });

  it('the cut-over is the last commit when a database first runs with sealed cursors; recorded once, and a missing record accepts nothing', async () => {
    const db = await freshDatabase();
    const writer = { clientId: 'x', organization: null };
    const reopen = async <T>(fn: (store: Store) => Promise<T>): Promise<T> => {
      const store = await Store.open(db.config, { now: Date.now });
      try {
        return await fn(store);
      } finally {
        await store.close();
      }
    };
    try {
      const top = await reopen(async (store) => {
        assert.equal(store.cutovers.numericFeedCursorsUpTo, 0, 'a new database has handed out no bare cursor');
        await store.transaction((tx) => tx.create('Patient', { resourceType: 'Patient', id: 'cut-1' }, writer));
        // As a database of the version before: neither the migration nor its records.
        await store.driver.run("DELETE FROM custodian_state WHERE name LIKE 'cutover-%'");
        await store.driver.run("DELETE FROM custodian_migrations WHERE id = '0022-cutovers'");
        return Number((await store.driver.get<{ seq: number | string }>('SELECT MAX(seq) AS seq FROM resource_versions'))!.seq);
      });
      assert.ok(top > 0);
      await reopen(async (upgraded) => {
        assert.equal(upgraded.cutovers.numericFeedCursorsUpTo, top);
        assert.ok(upgraded.cutovers.unboundTokensBefore > 0);
        await upgraded.transaction((tx) => tx.create('Patient', { resourceType: 'Patient', id: 'cut-2' }, writer));
      });
      // A database a build recorded the cut-overs for at start-up, before the migration did.
      await reopen(async (store) => store.driver.run("DELETE FROM custodian_migrations WHERE id = '0022-cutovers'"));
      await reopen(async (later) => {
        assert.equal(later.cutovers.numericFeedCursorsUpTo, top, 'recorded once, and kept by the migration');
        await later.driver.run("DELETE FROM custodian_state WHERE name = 'cutover-sealed-feed-cursors'");
      });
      await reopen(async (tampered) => assert.equal(tampered.cutovers.numericFeedCursorsUpTo, 0, 'a missing record is not recomputed: no bare cursor opens'));
    } finally {
      await db.drop();
    }
  });
});
