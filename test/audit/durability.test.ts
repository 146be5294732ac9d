import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import sqlite3 from 'sqlite3';
import { Client } from 'pg';
import { ENGINE, PG_URL, type TestDatabase } from '../support/db';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/** Another connection that blocks the audit trail's writes until released. */
interface Blocker {
  release(): Promise<void>;
}

async function blockAuditWrites(h: Harness): Promise<Blocker> {
  if (h.db.config.dialect === 'sqlite') {
    const db = new sqlite3.Database(h.db.config.storage);
    // WAL: readers keep reading while this connection holds the write lock.
    await new Promise<void>((resolve, reject) => db.exec('BEGIN EXCLUSIVE', (err) => (err ? reject(err) : resolve())));
    return {
      release: () => new Promise<void>((resolve) => db.exec('ROLLBACK', () => db.close(() => resolve()))),
    };
  }
  const client = new Client({ connectionString: h.db.url });
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE audit_chain IN ACCESS EXCLUSIVE MODE');
  return {
    async release() {
      await client.query('ROLLBACK');
      await client.end();
    },
  };
}

/** /healthz answers from a check up to 1 s old (so it cannot be used to load the database): ask as if another second had passed. */
let seconds = 0;
async function health(h: Harness) {
  const auto = h.clock.auto;
  h.clock.auto = false;
  h.clock.now = Date.now() + 1001 * ++seconds;
  try {
    return await h.anonymous.get('/healthz');
  } finally {
    h.clock.auto = auto;
  }
}

describe(`Audit: fail closed when the trail cannot be written (${ENGINE})`, () => {
  let h: Harness;
  let id: string;
  before(async () => {
    h = await startHarness({ lockTimeoutMs: 300 });
    id = (await h.api.post('/Patient', patient({ name: [{ family: 'Durable' }] }))).body.id;
  });
  after(() => h.close());

  it('answers 503 with no patient data while the audit store refuses writes, and recovers when it returns', async () => {
    assert.equal((await h.api.get(`/Patient/${id}`)).status, 200);
    assert.equal((await health(h)).status, 200);
    const blocker = await blockAuditWrites(h);
    try {
      for (const path of [`/Patient/${id}`, '/Patient?family=Durable', `/Patient/${id}/_history`]) {
        const res = await h.api.get(path);
        assert.equal(res.status, 503, `${path}: ${res.text.slice(0, 200)}`);
        assert.equal(res.body.resourceType, 'OperationOutcome');
        assert.equal(res.body.issue[0].code, 'transient');
        assert.doesNotMatch(res.text, /Durable/);
        assert.equal(res.headers.etag, undefined, 'no header of the withheld response leaks either');
        assert.equal(res.headers['retry-after'], '5');
      }
      const down = await health(h);
      assert.equal(down.status, 503);
      assert.match(JSON.parse(down.text).reason, /audit trail cannot be written/);
    } finally {
      await blocker.release();
    }
    const back = await h.api.get(`/Patient/${id}`, { 'X-Request-Id': 'after-recovery' });
    assert.equal(back.status, 200);
    assert.equal(back.body.name[0].family, 'Durable');
    assert.equal((await health(h)).status, 200);
    const events = (await h.api.get('/AuditEvent?entity:identifier=after-recovery')).body;
    assert.equal(events.entry.length, 1, 'and its access is on the trail');
    const verify = (await h.api.get('/AuditEvent/$verify')).body;
    assert.equal(verify.parameter[0].valueBoolean, true, 'the chain is intact across the outage');
  });

  it('a write whose events cannot be recorded answers 503 and stores nothing; a retry stores it once', async () => {
    const blocker = await blockAuditWrites(h);
    let status: number;
    try {
      status = (await h.api.post('/Patient', patient({ name: [{ family: 'Lost' }] }), { 'X-Request-Id': 'lost-write' })).status;
    } finally {
      await blocker.release();
    }
    assert.equal(status, 503);
    // Nothing of the write committed: no Patient, no version, no index row, and no AuditEvent of it.
    const stored = await h.store.driver.all("SELECT rid FROM resources WHERE type = 'Patient' AND content LIKE '%\"Lost\"%'");
    assert.deepEqual(stored, [], 'the Patient was not stored');
    const versions = await h.store.driver.all("SELECT seq FROM resource_versions WHERE type = 'Patient' AND content LIKE '%\"Lost\"%'");
    assert.deepEqual(versions, [], 'nor any version of it');
    assert.equal((await h.api.get('/Patient?family=Lost&_summary=count')).body.total, 0);
    assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
    // The client's retry creates it once, with its AuditEvent.
    const retry = await h.api.post('/Patient', patient({ name: [{ family: 'Lost' }] }), { 'X-Request-Id': 'lost-write-retry' });
    assert.equal(retry.status, 201);
    assert.equal((await h.api.get('/Patient?family=Lost&_summary=count')).body.total, 1);
    const events = (await h.api.get('/AuditEvent?entity:identifier=lost-write-retry')).body;
    assert.equal(events.entry.length, 1);
    assert.equal(events.entry[0].resource.entity.find((e: { role?: { code: string } }) => e.role?.code === '1').what.reference, `Patient/${retry.body.id}`);
  });
});

/** Reads the record of `id` as a client would; each answer must be the record (200) or nothing of it (503). */
async function readOrNothing(h: Harness, id: string): Promise<number> {
  const res = await h.api.get(`/Patient/${id}`);
  if (res.status !== 200) {
    assert.equal(res.status, 503, res.text.slice(0, 200));
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.doesNotMatch(res.text, /Faulty/);
  }
  return res.status;
}

/** The server's recovery is not timed: it is asked again, a bounded number of times, until it answers. */
async function eventually(what: string, fn: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what} did not come back`);
}

if (ENGINE === 'sqlite') {
  describe('Audit: the SQLite database file becomes read-only mid-run (sqlite)', () => {
    let h: Harness;
    let id: string;
    let files: string[];
    const chattr = (flag: '+i' | '-i') => execFileSync('chattr', [flag, ...files], { stdio: 'pipe' });
    before(async function () {
      h = await startHarness();
      id = (await h.api.post('/Patient', patient({ name: [{ family: 'Faulty' }] }))).body.id;
      files = [h.db.config.dialect === 'sqlite' ? h.db.config.storage : '', `${h.db.config.dialect === 'sqlite' ? h.db.config.storage : ''}-wal`];
      try {
        // The immutable attribute binds root too (file modes do not), and takes effect on the
        // server's open file descriptors: writes fail with SQLITE_IOERR, reads go on.
        chattr('+i');
        chattr('-i');
      } catch (err) {
        this.skip(); // needs chattr, CAP_LINUX_IMMUTABLE and a file system with the attribute (ext4, xfs, btrfs)
      }
    });
    after(async () => {
      if (files) execFileSync('chattr', ['-i', ...files.filter((f) => fs.existsSync(f))], { stdio: 'pipe' });
      await h?.close();
    });

    it('reads answer 503 with no data, /healthz fails, and the server recovers when the files are writable again', async () => {
      assert.equal(await readOrNothing(h, id), 200);
      chattr('+i');
      try {
        for (let i = 0; i < 3; i++) assert.equal(await readOrNothing(h, id), 503);
        const write = await h.api.post('/Patient', patient({ name: [{ family: 'Faulty' }] }));
        assert.equal(write.status, 503);
        assert.equal((await health(h)).status, 503);
      } finally {
        chattr('-i');
      }
      await eventually('reads', async () => (await readOrNothing(h, id)) === 200);
      assert.equal((await health(h)).status, 200);
      assert.equal((await h.api.get('/Patient?family=Faulty&_summary=count')).body.total, 1, 'the refused write stored nothing');
      assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
    });
  });
}

if (ENGINE === 'postgres') {
  describe('Audit: the PostgreSQL database stops taking writes mid-run (postgres)', () => {
    // A database of this test's own: the shared server keeps running for everyone else.
    const name = `custodian_fault_${randomBytes(5).toString('hex')}`;
    const url = PG_URL.replace(/\/[^/?]*(\?|$)/, `/${name}$1`);
    let admin: Client;
    let h: Harness;
    let id: string;
    const sql = (text: string) => admin.query(text);
    /** Its sessions end, so the server's pool reconnects under the database's new defaults. */
    const dropSessions = () => sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}' AND pid <> pg_backend_pid()`);
    before(async () => {
      admin = new Client({ connectionString: PG_URL });
      await admin.connect();
      await sql(`CREATE DATABASE ${name}`);
      const database: TestDatabase = {
        config: { dialect: 'postgres', url, poolMax: 4, writeTimeoutMs: 2000 },
        url,
        drop: async () => void (await sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)),
      };
      h = await startHarness({ database });
      id = (await h.api.post('/Patient', patient({ name: [{ family: 'Faulty' }] }))).body.id;
    });
    after(async () => {
      await h?.close();
      await admin?.end();
    });

    it('reads answer 503 with no data while the database is read-only, /healthz fails, and the server recovers', async () => {
      assert.equal(await readOrNothing(h, id), 200);
      await sql(`ALTER DATABASE ${name} SET default_transaction_read_only = on`);
      try {
        await dropSessions();
        for (let i = 0; i < 3; i++) assert.equal(await readOrNothing(h, id), 503);
        assert.equal((await h.api.post('/Patient', patient({ name: [{ family: 'Faulty' }] }))).status, 503);
        assert.equal((await health(h)).status, 503);
      } finally {
        await sql(`ALTER DATABASE ${name} RESET default_transaction_read_only`);
        await dropSessions();
      }
      await eventually('reads', async () => (await readOrNothing(h, id)) === 200);
      await eventually('/healthz', async () => (await health(h)).status === 200);
      assert.equal((await h.api.get('/Patient?family=Faulty&_summary=count')).body.total, 1, 'the refused write stored nothing');
      assert.equal((await h.api.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
    });
  });
}
