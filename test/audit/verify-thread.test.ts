import assert from 'node:assert/strict';
import { Client } from 'pg';
import { QueryTypes, Sequelize } from 'sequelize';
import { ChainVerifier, VerificationStopped, verifyPgOptions } from '../../server/store/verify-thread';
import { ENGINE, freshDatabase, type TestDatabase } from '../support/db';
import { Store } from '../../server/store/store';
import { bulkAuditEvent } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * `$verify`'s walk on a thread of its own (store/verify-thread.ts): one at a time, shared by
 * requests with the same anchors, bounded by a deadline, stopped when the store closes, and its
 * failures told apart (a database that is unavailable answers 503, as before the walk moved).
 */
describe(`Audit: the chain is verified on a thread of its own (${ENGINE})`, () => {
  let db: TestDatabase;
  let store: Store;
  before(async function () {
    this.timeout(60000);
    db = await freshDatabase();
    store = await Store.open(db.config, { now: Date.now });
    for (let k = 0; k < 3; k++) await store.appendAudit([{ events: Array.from({ length: 1000 }, (_, i) => bulkAuditEvent(k * 1000 + i, 50)) }], { clientId: 'verify-test', organization: null });
  });
  after(async () => {
    await store.close();
    await db.drop();
  });

  it('requests that arrive while one runs share the next run when their anchors are the same, and all get the report', async function () {
    this.timeout(60000);
    const verifier = new ChainVerifier(db.config);
    try {
      const first = verifier.verify({});
      // Under way once its turn has come (the next turn of the event loop).
      await new Promise((resolve) => setImmediate(resolve));
      const second = verifier.verify({});
      const third = verifier.verify({});
      const anchored = verifier.verify({ anchors: [{ seq: 1, hash: 'f'.repeat(64) }] });
      assert.equal(second, third, 'the same anchors share one run');
      assert.notEqual(first, second, 'a run under way is not joined: it may have begun before the request');
      for (const report of await Promise.all([first, second, third])) {
        assert.equal(report.ok, true, JSON.stringify(report));
        assert.equal(report.links, 3000);
      }
      const report = await anchored;
      assert.equal(report.ok, false);
      assert.equal(report.firstProblem?.problem, 'anchor-mismatch');
    } finally {
      await verifier.close();
    }
  });

  it('a run past its deadline is stopped, and says so', async function () {
    this.timeout(60000);
    const verifier = new ChainVerifier(db.config, 1);
    await assert.rejects(verifier.verify({}), (err: Error) => err instanceof VerificationStopped && /ran longer than/.test(err.message));
    await verifier.close();
  });

  it('on PostgreSQL, the thread\'s connection is read-only: it cannot change the trail it checks', async function () {
    if (ENGINE !== 'postgres') return this.skip();
    const sequelize = new Sequelize(db.url!, verifyPgOptions(60000));
    try {
      const [row] = await sequelize.query<{ default_transaction_read_only: string }>('SHOW default_transaction_read_only', { type: QueryTypes.SELECT });
      assert.equal(row.default_transaction_read_only, 'on');
      // It reads the test's schema (DATABASE_URL's search_path is kept) and its rows.
      const [head] = await sequelize.query<{ n: string }>('SELECT COUNT(*) AS n FROM audit_chain_head', { type: QueryTypes.SELECT });
      assert.equal(Number(head.n), 1);
      await assert.rejects(sequelize.query('DELETE FROM audit_chain'), /read-only transaction/);
      await assert.rejects(sequelize.query('UPDATE audit_chain_head SET links = links'), /read-only transaction/);
    } finally {
      await sequelize.close();
    }
  });

  it('on PostgreSQL, a run stopped at its deadline leaves no statement running on the server', async function () {
    if (ENGINE !== 'postgres') return this.skip();
    this.timeout(60000);
    // Another session holds the chain's tables: the walk's first read waits for them.
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE audit_chain, audit_chain_head, resources IN ACCESS EXCLUSIVE MODE');
      const verifier = new ChainVerifier(db.config, 1500);
      await assert.rejects(verifier.verify({}), (err: Error) => err instanceof VerificationStopped && /ran longer than/.test(err.message));
      await verifier.close();
      // The halted thread is gone; the server process it left waits for the lock no longer than the deadline either.
      const waiting = async () =>
        Number((await holder.query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")).rows[0].n);
      let n = await waiting();
      for (let i = 0; i < 50 && n > 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        n = await waiting();
      }
      assert.equal(n, 0, 'a statement of the stopped run still waits on the server');
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }
  });

  it('closing stops the run under way and refuses later ones', async function () {
    this.timeout(60000);
    const verifier = new ChainVerifier(db.config);
    const run = verifier.verify({});
    const waiting = verifier.verify({ anchors: [{ seq: 1, hash: 'f'.repeat(64) }] });
    // The first is walking by then (its thread starts in tens of ms; 3,000 links take longer).
    await new Promise((resolve) => setTimeout(resolve, 100));
    await verifier.close();
    await assert.rejects(run, (err: Error) => err instanceof VerificationStopped && /the store is closing/.test(err.message));
    await assert.rejects(waiting, VerificationStopped);
    await assert.rejects(verifier.verify({}), VerificationStopped);
  });

  it("a database it cannot reach fails the run with the database's own code, by which it answers 503", async function () {
    this.timeout(60000);
    const verifier = new ChainVerifier({ dialect: 'postgres', url: 'postgres://postgres@127.0.0.1:1/none', poolMax: 1 });
    await assert.rejects(verifier.verify({}), (err: Error & { code?: string }) => {
      assert.ok(!(err instanceof VerificationStopped));
      assert.ok(err.code === 'ECONNREFUSED' || /^SequelizeConnection/.test(err.name), `${err.name} ${err.code} ${err.message}`);
      return true;
    });
    await verifier.close();
  });
});

describe(`Audit: $verify while the store is closing (${ENGINE})`, () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('answers 503 with an OperationOutcome: the client may retry', async () => {
    assert.equal((await h.api.get('/AuditEvent/$verify')).status, 200);
    await h.store.verifier.close();
    const res = await h.api.get('/AuditEvent/$verify');
    assert.equal(res.status, 503);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.match(JSON.stringify(res.body), /the store is closing; try again later/);
  });

  it('a database error the walk meets answers 503 when it means the database is unavailable', async () => {
    const unavailable = Object.assign(new Error('the audit chain could not be verified: connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    const verifier = h.store.verifier as unknown as { verify: () => Promise<never> };
    const original = verifier.verify;
    verifier.verify = () => Promise.reject(unavailable);
    try {
      const res = await h.api.get('/AuditEvent/$verify');
      assert.equal(res.status, 503);
      assert.equal(res.body.resourceType, 'OperationOutcome');
    } finally {
      verifier.verify = original;
    }
  });
});
