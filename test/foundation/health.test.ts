import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PUBLIC_PATHS } from '../../server/access/authenticate';
import { startHarness, type Harness } from '../support/harness';

describe('Health: GET /healthz', () => {
  let h: Harness;
  let probes = 0;
  let failWith: Error | undefined;
  const t0 = Date.UTC(2034, 0, 1);
  before(async () => {
    h = await startHarness({ frozenAt: t0 });
    // The app calls the store's probe through a closure, so it can be observed and made to fail.
    const probe = h.store.probeWrite.bind(h.store);
    h.store.probeWrite = async () => {
      probes++;
      if (failWith) throw failWith;
      return probe();
    };
  });
  after(() => h.close());
  const tick = () => (h.clock.now += 1001);

  it('answers 200 without a token (for load balancers), with no-store', async () => {
    tick();
    const res = await h.anonymous.get('/healthz');
    assert.equal(res.status, 200);
    assert.equal(JSON.parse(res.text).status, 'ok');
    assert.equal(res.headers['cache-control'], 'no-store');
  });

  it('reports the audit trail\'s group commit: events written, commits they took, the largest', async () => {
    const stats = async () => {
      tick();
      return JSON.parse((await h.anonymous.get('/healthz')).text) as { auditEventsWritten: number; auditCommits: number; largestAuditBatch: number };
    };
    const before = await stats();
    // Fifty audited requests at once (401s are audited too) share far fewer commits than fifty.
    await Promise.all(Array.from({ length: 50 }, () => h.anonymous.get('/Patient')));
    const after = await stats();
    const events = after.auditEventsWritten - before.auditEventsWritten;
    const commits = after.auditCommits - before.auditCommits;
    assert.equal(events, 50);
    assert.ok(commits >= 1 && commits < 50, `${commits} commits for 50 events`);
    assert.ok(after.largestAuditBatch >= Math.ceil(50 / commits));
  });

  it('writes to the database at most once a second, however often and however concurrently it is called', async () => {
    tick();
    const before = probes;
    const answers = await Promise.all(Array.from({ length: 25 }, () => h.anonymous.get('/healthz')));
    for (let i = 0; i < 25; i++) answers.push(await h.anonymous.get('/healthz'));
    assert.ok(answers.every((r) => r.status === 200));
    assert.equal(probes - before, 1, 'one probe answered fifty calls');
    h.clock.now += 999;
    await h.anonymous.get('/healthz');
    assert.equal(probes - before, 1, 'still within the second');
    h.clock.now += 2;
    await h.anonymous.get('/healthz');
    assert.equal(probes - before, 2, 'a second later, a new probe');
  });

  it('a failing database gives a 503 that names no database error (the detail is logged)', async () => {
    failWith = Object.assign(new Error('SQLITE_CANTOPEN: unable to open database file /srv/secret/custodian.sqlite'), { code: 'SQLITE_CANTOPEN' });
    try {
      tick();
      const res = await h.anonymous.get('/healthz');
      assert.equal(res.status, 503);
      const body = JSON.parse(res.text);
      assert.deepEqual(Object.keys(body).sort(), ['reason', 'status']);
      assert.equal(body.status, 'unavailable');
      assert.doesNotMatch(res.text, /SQLITE|secret|sqlite|open/);
    } finally {
      failWith = undefined;
    }
    tick();
    assert.equal((await h.anonymous.get('/healthz')).status, 200, 'and recovers on the next check');
  });

  it('is listed among the unauthenticated routes, in the code and in the README', () => {
    assert.ok(PUBLIC_PATHS.has('/healthz'));
    const readme = fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'README.md'), 'utf8');
    const sentence = readme.slice(readme.indexOf('Nobody gets in anonymously'), readme.indexOf('needs a bearer token'));
    for (const p of PUBLIC_PATHS) assert.ok(sentence.includes(`\`${p}\``), `README does not list ${p} as unauthenticated`);
  });
});
