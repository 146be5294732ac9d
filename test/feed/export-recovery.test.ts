import { CursorSeal } from '../../server/gate/cursor';
import assert from 'node:assert/strict';
import type { Resource } from 'fhir/r4';
import { generateJwkPair } from '../../server/access/keys';
import { ClientRegistry, parseRegistry } from '../../server/access/registry';
import { scopePolicy } from '../../server/access/scope-policy';
import { ConsentPolicy, type PolicyData } from '../../server/consent/policy';
import { ExportRunner } from '../../server/feed/export-runner';
import { ExportGate } from '../../server/gate/exports';
import { allOf } from '../../server/gate/policy';
import { PatientFactsCache } from '../../server/gate/policy-data';
import { createLogger } from '../../server/log';
import { ExportJobs } from '../../server/store/exports';
import type { Api } from '../support/api';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';
import { kickOff, org } from './fixtures';

const BASE = 'http://custodian.test/fhir';

/**
 * An export survives its runner: one that fails part-way hands the job back, and the next
 * resumes from the last file it committed (no line twice, none missing); a job that cannot be
 * finished fails visibly instead of ever presenting a partial result as complete.
 */
describe('Feed: an interrupted export resumes or fails visibly', function () {
  this.timeout(30000);
  let h: Harness;
  let national: Api;
  const consents: string[] = [];
  const now = () => h.clock.now;

  before(async () => {
    h = await startHarness({
      frozenAt: Date.UTC(2024, 2, 1, 10, 0, 0),
      env: { CUSTODIAN_EXPORT_FILE_RESOURCES: '3' },
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] },
      ],
    });
    national = await h.as('national', { purpose: 'PUBHLTH' });
    const gp = await h.as('gp');
    const p = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id;
    for (let i = 0; i < 10; i++) consents.push((await gp.post('/Consent', consent(p))).body.id);
  });
  after(() => h.close());

  /** A second runner (another "process") whose gate fails on the pages `failOn` says. */
  function runner(owner: string, failOn: (page: number) => boolean, registry?: ClientRegistry): ExportRunner {
    const jobs = new ExportJobs(h.store, now);
    const policy = allOf(scopePolicy, new ConsentPolicy(new PatientFactsCache(h.store.reader), { defaultPolicy: 'deny', now }));
    const all = ClientRegistry.of(parseRegistry([...h.clients.values()].map((c) => c.entry), '(test)'));
    const gate = new ExportGate(h.store.reader, policy, jobs, new CursorSeal(h.store.cursorKey), registry ?? all);
    let pages = 0;
    const flaky = Object.assign(Object.create(gate) as ExportGate, {
      page: (...args: Parameters<ExportGate['page']>) => (failOn(++pages) ? Promise.reject(new Error('the process died here')) : gate.page(...args)),
    });
    return new ExportRunner({ jobs, gate: flaky, registry: registry ?? all, config: h.config.feed, baseUrl: h.config.baseUrl, now, logger: createLogger('silent'), owner });
  }

  it('a runner that fails after two files hands the job back; the next resumes and the files hold every Consent once', async () => {
    const status = await kickOff(national, '/$export?_type=Consent');
    await runner('crashing', (page) => page === 3).runOnce();
    const during = await national.get(status);
    assert.equal(during.status, 202, 'not complete, and not presented as complete');
    assert.equal(during.headers['x-progress'], 'running: 2 files written', 'files, never counts or shares of what was examined');
    await h.app.feed.exports.runOnce();
    assert.equal((await national.get(status)).status, 202, 'the lease is respected until the retry is due');
    h.clock.now += 10000;
    await h.app.feed.exports.runOnce();
    const res = await national.get(status);
    assert.equal(res.status, 200, res.text);
    const manifest = JSON.parse(res.text) as { output: { url: string; count: number }[] };
    assert.deepEqual(manifest.output.map((o) => o.count), [3, 3, 3, 1]);
    const ids: string[] = [];
    for (const o of manifest.output) {
      const text = (await national.get(o.url.replace(BASE, ''))).text;
      ids.push(...text.trimEnd().split('\n').map((l) => (JSON.parse(l) as Resource).id!));
    }
    assert.deepEqual(ids, consents, 'every Consent exactly once, in commit order');
  });

  it('decides on facts of its own: an export does not go through (and so cannot clear) the facts cache interactive requests share', async () => {
    const shared = new PatientFactsCache(h.store.reader);
    let asked = 0;
    const counted: PolicyData = {
      patients: (...args) => {
        asked++;
        return shared.patients(...args);
      },
    };
    const jobs = new ExportJobs(h.store, now);
    const policy = allOf(scopePolicy, new ConsentPolicy(counted, { defaultPolicy: 'deny', now }));
    const all = ClientRegistry.of(parseRegistry([...h.clients.values()].map((c) => c.entry), '(test)'));
    const gate = new ExportGate(h.store.reader, policy, jobs, new CursorSeal(h.store.cursorKey), all);
    // The custodian's export needs its patients' facts for every Consent (a national service's would not).
    const gp = await h.as('gp');
    const status = await kickOff(gp, '/$export?_type=Consent');
    await new ExportRunner({ jobs, gate, registry: all, config: h.config.feed, baseUrl: h.config.baseUrl, now, logger: createLogger('silent'), owner: 'uncached' }).runOnce();
    const res = await gp.get(status);
    assert.equal(res.status, 200, res.text);
    const manifest = JSON.parse(res.text) as { output: { count: number }[] };
    assert.equal(manifest.output.reduce((n, o) => n + o.count, 0), consents.length, 'every Consent of its patient, decided');
    assert.equal(asked, 0, 'the shared cache was not asked');
  });

  it('a job that keeps failing is failed visibly after five attempts: 500 with an OperationOutcome, no files', async () => {
    const status = await kickOff(national, '/$export?_type=Consent');
    const broken = runner('broken', () => true);
    for (let i = 0; i < 6; i++) {
      await broken.runOnce();
      h.clock.now += 10000;
    }
    const res = await national.get(status);
    assert.equal(res.status, 500);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.equal(res.body.issue[0].code, 'processing');
    assert.match(res.body.issue[0].diagnostics, /failed: the export was started or resumed 5 times/);
  });

  it('a runner scanning a long page keeps its lease, and one that lost it cannot renew it', async () => {
    const status = await kickOff(national, '/$export?_type=Consent');
    const jobs = new ExportJobs(h.store, now);
    const job = await jobs.claim('scanner', h.clock.now + 1000);
    assert.ok(job, 'claimed');
    assert.equal(await jobs.renew(job.id, 'scanner', h.clock.now + 60000), true);
    assert.equal(await jobs.renew(job.id, 'someone-else', h.clock.now + 60000), false);
    await jobs.release(job.id, 'scanner', 0);
    await h.app.feed.exports.runOnce();
    assert.equal((await national.get(status)).status, 200);
  });

  it('a job whose client has left the registry stops, visibly', async () => {
    const status = await kickOff(national, '/$export?_type=Consent');
    const without = ClientRegistry.of(parseRegistry([...h.clients.values()].filter((c) => c.clientId !== 'national').map((c) => c.entry), '(test)'));
    await runner('strict', () => false, without).runOnce();
    const res = await national.get(status);
    assert.equal(res.status, 500);
    assert.match(res.body.issue[0].diagnostics, /client national is no longer registered/);
  });

  it('a job asked for with a key since rotated out of the registry stops, visibly; the same client with its key kept runs on', async () => {
    const status = await kickOff(national, '/$export?_type=Consent');
    const fresh = await generateJwkPair();
    const entries = [...h.clients.values()].map((c) => c.entry);
    const rekeyed = (keys: unknown[]) => ClientRegistry.of(parseRegistry(entries.map((e) => (e.client_id === 'national' ? { ...e, jwks: { keys } } : e)), '(test)'));
    const national0 = (entries.find((e) => e.client_id === 'national')!.jwks as { keys: unknown[] }).keys;
    // A second key added: the job's own key is still there, so it goes on.
    await runner('rotating', () => false, rekeyed([...national0, fresh.publicJwk])).runOnce();
    assert.equal((await national.get(status)).status, 200, 'finished with both keys registered');
    const second = await kickOff(national, '/$export?_type=Consent');
    await runner('rotated', () => false, rekeyed([fresh.publicJwk])).runOnce();
    const res = await national.get(second);
    assert.equal(res.status, 500);
    assert.match(res.body.issue[0].diagnostics, /no longer with the key it asked with/);
  });
});
