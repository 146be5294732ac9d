import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../../server/config';
import { ENGINE } from '../support/db';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * SQLite's audit worker (store/audit-thread.ts): the writer of the audit trail's own events on a
 * thread of its own. A worker that dies fails its calls (never answers "committed" for events it
 * did not store), frees the writer lock it held, and the next request starts another.
 */
(ENGINE === 'sqlite' ? describe : describe.skip)('Store: the SQLite audit worker fails closed and comes back', () => {
  let h: Harness;
  let id: string;
  before(async () => {
    h = await startHarness();
    id = (await h.api.post('/Patient', patient({ name: [{ family: 'Worker' }] }))).body.id;
  });
  after(() => h.close());

  const stored = async (requestId: string) => (await h.api.get(`/AuditEvent?entity:identifier=${requestId}`)).body.entry?.length ?? 0;

  it('a request whose events were handed to a dying worker is either refused or on the trail, never answered without its audit', async () => {
    const thread = h.store.auditThread!;
    const read = h.api.get(`/Patient/${id}`, { 'X-Request-Id': 'worker-dies' });
    // The events reach the worker on the next turn of the event loop; it is stopped right after.
    setImmediate(() => setImmediate(() => void thread.crash()));
    const res = await read;
    if (res.status === 200) assert.equal(await stored('worker-dies'), 1, 'answered, so its AuditEvent was committed');
    else {
      assert.equal(res.status, 503, res.text);
      assert.doesNotMatch(res.text, /Worker/);
    }
  });

  it('the next request starts a new worker; writes on the main thread still get the writer lock; the chain is intact', async () => {
    await h.store.auditThread!.crash();
    const back = await h.api.get(`/Patient/${id}`, { 'X-Request-Id': 'worker-back' });
    assert.equal(back.status, 200);
    assert.equal(await stored('worker-back'), 1);
    assert.equal((await h.api.post('/Patient', patient({ name: [{ family: 'After' }] }))).status, 201);
    const verify = (await h.api.get('/AuditEvent/$verify')).body;
    assert.equal(verify.parameter[0].valueBoolean, true);
  });

  it('a worker crashing again and again under load never takes the process down, and every request answered is on the trail', async () => {
    // Before sqliteQuiesce a crash with a commit or an indexing script under way aborted the
    // whole process (CI, 2026-12-06; test/foundation/driver-quiesce.test.ts shows why).
    let stop = false;
    const answered: string[] = [];
    const refused: number[] = [];
    let n = 0;
    const load = async () => {
      while (!stop) {
        const requestId = `crash-load-${n++}`;
        const res = await h.api.get(`/Patient?_id=${id}`, { 'X-Request-Id': requestId });
        if (res.status === 200) answered.push(requestId);
        else refused.push(res.status);
      }
    };
    const loaders = [load(), load(), load()];
    for (let i = 0; i < 25; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 60));
      await h.store.auditThread!.crash();
    }
    stop = true;
    await Promise.all(loaders);
    assert.deepEqual([...new Set(refused)].filter((s) => s !== 503), [], 'refused only as unavailable');
    assert.ok(answered.length > 0, 'some requests were answered between crashes');
    for (const requestId of answered) assert.equal(await stored(requestId), 1, `${requestId} was answered, so its AuditEvent is stored`);
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });

  it('appends and main-thread writes issued together all commit, and every request is on the trail', async () => {
    const count = async () => {
      await h.store.auditIndex.materialized();
      return Number((await h.store.driver.get<{ n: number | string }>("SELECT COUNT(*) AS n FROM resources WHERE type = 'AuditEvent'"))!.n);
    };
    const before = await count();
    const reads = Array.from({ length: 40 }, () => h.api.get(`/Patient/${id}`));
    const writes = Array.from({ length: 10 }, (_, i) => h.api.post('/Patient', patient({ name: [{ family: `Concurrent${i}` }] })));
    const results = await Promise.all([...reads, ...writes]);
    assert.deepEqual(
      results.map((r) => r.status),
      [...reads.map(() => 200), ...writes.map(() => 201)],
    );
    assert.ok((await count()) - before >= results.length, 'one AuditEvent per request at least');
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
  });
});

/**
 * The benchmark's floors (CUSTODIAN_BENCH_AUDIT_FLOOR, (b0) and (b1) in `npm run bench`): what the
 * bench reports as the cost of being durable before the response, or of a journal of whole
 * events, must be exactly that: committed before the response, and nothing else.
 */
for (const [floor, table, what] of [
  ['row', 'bench_audit_floor', 'one row per request'],
  ['journal', 'bench_audit_journal', 'one journal row per AuditEvent'],
] as const) {
  (ENGINE === 'sqlite' ? describe : describe.skip)(`Store: the bench-only audit floor '${floor}'`, () => {
    let h: Harness;
    let id: string;
    before(async () => {
      h = await startHarness({ env: { CUSTODIAN_BENCH_AUDIT_FLOOR: floor } });
      id = (await h.api.post('/Patient', patient({ name: [{ family: 'Floor' }] }))).body.id;
    });
    after(() => h.close());

    const count = async (sql: string) => Number((await h.store.driver.get<{ n: number | string }>(sql))!.n);

    it(`commits ${what} before the response, and no AuditEvent to the trail`, async () => {
      const events = await count("SELECT COUNT(*) AS n FROM resources WHERE type = 'AuditEvent'");
      const rows = await count(`SELECT COUNT(*) AS n FROM ${table}`);
      const reads = await Promise.all(Array.from({ length: 12 }, () => h.api.get(`/Patient/${id}`)));
      assert.deepEqual(
        reads.map((r) => r.status),
        reads.map(() => 200),
      );
      // Each response was held for its row's COMMIT: all twelve are there once they are answered.
      assert.equal((await count(`SELECT COUNT(*) AS n FROM ${table}`)) - rows, 12);
      assert.equal(await count("SELECT COUNT(*) AS n FROM resources WHERE type = 'AuditEvent'"), events);
      if (floor === 'journal') {
        const journal = await h.store.driver.all<{ seq: number; content: string }>('SELECT seq, content FROM bench_audit_journal ORDER BY seq');
        assert.deepEqual(
          journal.map((j) => j.seq),
          journal.map((_, i) => i + 1),
          'one chain, no gaps',
        );
        const last = JSON.parse(journal[journal.length - 1].content);
        assert.equal(last.resourceType, 'AuditEvent');
        assert.ok(last.entity.some((e: { what?: { reference?: string } }) => e.what?.reference === `Patient/${id}`), 'the whole BALP event, naming the patient');
      }
    });
  });
}

describe('Config: the bench-only audit floor setting', () => {
  const floor = (env: Record<string, string>) => loadConfig(env, '/tmp').benchAuditFloor;
  it('is off unless set, and takes only row or journal', () => {
    assert.equal(floor({}), undefined);
    assert.equal(floor({ CUSTODIAN_BENCH_AUDIT_FLOOR: 'journal' }), 'journal');
    assert.throws(() => floor({ CUSTODIAN_BENCH_AUDIT_FLOOR: '1' }), (err: unknown) => err instanceof ConfigError && /CUSTODIAN_BENCH_AUDIT_FLOOR/.test(err.message));
  });
  it('refuses PostgreSQL, where it would change nothing but the log', () => {
    assert.throws(
      () => floor({ CUSTODIAN_BENCH_AUDIT_FLOOR: 'row', DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test' }),
      (err: unknown) => err instanceof ConfigError && /SQLite only/.test(err.message),
    );
  });
});
