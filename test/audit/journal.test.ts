import assert from 'node:assert/strict';
import type { AuditEvent } from 'fhir/r4';
import { uuidv7 } from '../../server/audit/items';
import { AuditJournal } from '../../server/store/audit-journal';
import type { Driver } from '../../server/store/driver';
import { ENGINE } from '../support/db';
import { loadJson, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * What a search for some patients moves out of the audit journal (store/audit-journal.ts): all
 * of it when it could hold an event about one of them, nothing otherwise. The count is kept by
 * the thread that appends to the journal; here over a driver that records what is asked of it.
 */
describe('Audit: the journal moves for the patients searched for', () => {
  /** A driver with a journal of `rows` (seq, queue key) and nothing else: moves delete from it. */
  function fakeDriver(rows: { seq: number; patient: string | null }[]) {
    const asked: string[] = [];
    const driver = {
      script: async (sql: unknown) => {
        const m = /DELETE FROM audit_journal WHERE seq BETWEEN (\d+) AND (\d+)/.exec(String(sql));
        asked.push('move');
        if (m) rows.splice(0, rows.length, ...rows.filter((r) => r.seq < Number(m[1]) || r.seq > Number(m[2])));
      },
      all: async (sql: string) => {
        asked.push(sql.slice(0, 40));
        const byKey = new Map<string | null, { patient: string | null; n: number; lo: number; hi: number }>();
        const limit = /LIMIT (\d+)/.exec(sql);
        for (const r of rows.slice(0, limit ? Number(limit[1]) : undefined)) {
          const g = byKey.get(r.patient) ?? { patient: r.patient, n: 0, lo: r.seq, hi: r.seq };
          g.n++;
          g.lo = Math.min(g.lo, r.seq);
          g.hi = Math.max(g.hi, r.seq);
          byKey.set(r.patient, g);
        }
        return [...byKey.values()];
      },
      get: async (sql: string, params?: unknown[]) => {
        asked.push(sql.slice(0, 40));
        if (/MAX\(seq\)/.test(sql)) return { seq: rows.length ? Math.max(...rows.map((r) => r.seq)) : null };
        const first = rows.find((r) => r.seq <= Number(params?.[0]));
        return first ? { seq: first.seq } : undefined;
      },
    };
    return { driver: driver as unknown as Driver, asked, rows };
  }

  it('counts what it holds when it starts, and what is appended; moves all of it only for a patient it holds', async () => {
    const { driver, asked, rows } = fakeDriver([
      { seq: 1, patient: 'Patient/a' },
      { seq: 2, patient: '' },
    ]);
    const journal = new AuditJournal(driver);
    await journal.load();
    asked.length = 0;
    await journal.drainFor(['Patient/b']);
    assert.equal(asked.length, 0, 'nothing about b: not even a query');
    rows.push({ seq: 3, patient: 'Patient/b' });
    journal.journaled(['Patient/b']);
    await journal.drainFor(['Patient/b', 'Patient/c']);
    assert.ok(asked.includes('move'), 'b is there: moved');
    assert.deepEqual(rows, [], 'all of it, the other patients\' events too');
    asked.length = 0;
    await journal.drainFor(['Patient/a']);
    await journal.drainFor(['Patient/b']);
    assert.equal(asked.length, 0, 'what was moved is no longer counted');
  });

  it('an event about several patients (key null) could be about anyone: it is moved for every search', async () => {
    const { driver, asked, rows } = fakeDriver([{ seq: 7, patient: null }]);
    const journal = new AuditJournal(driver);
    await journal.load();
    await journal.drainFor(['Patient/z']);
    assert.ok(asked.includes('move'));
    assert.deepEqual(rows, []);
  });

  it('a move that fails leaves the count as it was: the next search for the patient moves again', async () => {
    const { driver, rows } = fakeDriver([{ seq: 1, patient: 'Patient/a' }]);
    let fail = true;
    const script = driver.script!;
    (driver as { script: typeof script }).script = async (sql) => {
      if (fail) throw new Error('disk full');
      return script(sql);
    };
    const journal = new AuditJournal(driver);
    await journal.load();
    await assert.rejects(journal.drainFor(['Patient/a']), /disk full/);
    fail = false;
    await journal.drainFor(['Patient/a']);
    assert.deepEqual(rows, []);
  });
});

/**
 * Through the server: whatever the journal holds when a search comes, the search sees every event
 * committed before it (the background move is not waited for, and may not have run).
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Audit: searches see events committed to the journal (SQLite)', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('each read is found at once by a search for its patient, and by $access-report', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await h.api.post('/Patient', patient({ name: [{ family: `Journal${i}` }] }))).body.id);
    for (let round = 0; round < 5; round++) {
      for (const id of ids) {
        const requestId = `journal-${round}-${id}-${uuidv7()}`;
        assert.equal((await h.api.get(`/Patient/${id}`, { 'X-Request-Id': requestId })).status, 200);
        const found = (await h.api.get(`/AuditEvent?patient=${id}&_sort=-date&_count=200`)).body.entry.map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
        assert.ok(
          found.some((e) => e.entity?.some((x) => x.what?.identifier?.value === requestId)),
          `round ${round}: the read of Patient/${id} is found by the search that follows it`,
        );
        const report = (await h.api.get(`/Patient/${id}/$access-report`)).body;
        assert.equal(report.resourceType, 'Parameters');
      }
    }
  });

  it('an audit source\'s event and the server\'s own are both there, the chain intact', async () => {
    const posted = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
    delete posted.id;
    const created = await h.api.post('/AuditEvent', posted);
    assert.equal(created.status, 201);
    assert.equal((await h.api.get(`/AuditEvent/${created.body.id}`)).status, 200);
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });
});
