import assert from 'node:assert/strict';
import sqlite3 from 'sqlite3';
import { Client } from 'pg';
import { ENGINE } from '../support/db';
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
