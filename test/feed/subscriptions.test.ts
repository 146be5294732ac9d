import assert from 'node:assert/strict';
import type { AuditEvent, Bundle, Consent, Parameters, ParametersParameter, Subscription } from 'fhir/r4';
import { generateJwkPair } from '../../server/access/keys';
import { Api } from '../support/api';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';
import { nationalOptOut, org } from './fixtures';
import { Receiver } from './receiver';

const LOINC = 'http://loinc.org|59284-0';
const OTHER_CATEGORY = { coding: [{ system: 'http://loinc.org', code: '64292-6' }] };

function subscription(endpoint: string, extra: Partial<Subscription> = {}, channel: Partial<Subscription['channel']> = {}): Subscription {
  return {
    resourceType: 'Subscription',
    status: 'requested',
    reason: 'national consent feed',
    criteria: `Consent?category=${LOINC}`,
    channel: { type: 'rest-hook', endpoint, payload: 'application/fhir+json', header: ['Authorization: Bearer receiver-secret'], ...channel },
    ...extra,
  };
}

const part = (p: ParametersParameter, name: string) => p.part!.find((x) => x.name === name);

describe('Feed: Subscriptions (rest-hook) from a durable outbox', function () {
  this.timeout(30000);
  let h: Harness;
  let receiver: Receiver;
  let gp: Api;
  let national: Api;
  let hospital: Api;
  let pid: string;
  const start = Date.UTC(2024, 4, 1, 12, 0, 0);

  before(async () => {
    receiver = await Receiver.start();
    h = await startHarness({
      frozenAt: start,
      env: {
        CUSTODIAN_SUBSCRIPTION_ENDPOINTS: `${receiver.base}/hooks`,
        CUSTODIAN_DELIVERY_RETRY_MS: '1000',
        CUSTODIAN_DELIVERY_ERROR_AFTER: '3',
      },
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Consent.rs'], purposes: ['TREAT'] },
        { clientId: 'emergency', ods: 'ED1', scopes: ['system/Consent.rs'], purposes: ['TREAT', 'BTG'] },
        { clientId: 'research', ods: 'RES1', scopes: ['system/Consent.rs'], purposes: ['HRESCH'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
      ],
    });
    gp = await h.as('gp');
    national = await h.as('national', { purpose: 'PUBHLTH' });
    hospital = await h.as('hospital');
    pid = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id;
  });
  after(async () => {
    await h.close();
    await receiver.close();
  });
  beforeEach(() => {
    receiver.received.length = 0;
    receiver.status = 200;
  });

  /** Runs the deliverer until it finds nothing more to do. */
  async function deliver(): Promise<void> {
    for (let i = 0; i < 20 && (await h.app.feed.deliverer.runOnce()); i++);
  }

  async function subscribe(api: Api, body: Subscription): Promise<Subscription> {
    const res = await api.post('/Subscription', body);
    assert.equal(res.status, 201, res.text);
    return res.body as Subscription;
  }

  it('creates a Subscription (status active) that only its owner can see, change or delete', async () => {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/owner`));
    assert.equal(sub.status, 'active');
    assert.equal(sub.meta!.versionId, '1');
    assert.equal((await national.get(`/Subscription/${sub.id}`)).body.criteria, `Consent?category=${LOINC}`);
    for (const res of [await hospital.get(`/Subscription/${sub.id}`), await hospital.put(`/Subscription/${sub.id}`, { ...sub, status: 'off' }), await hospital.delete(`/Subscription/${sub.id}`)]) {
      assert.equal(res.status, 404, 'another client learns nothing of it');
    }
    assert.equal(((await hospital.get('/Subscription')).body as Bundle).total, 0);
    assert.equal(((await national.get(`/Subscription?_id=${sub.id}`)).body as Bundle).total, 1);
    assert.equal((await national.delete(`/Subscription/${sub.id}`)).status, 204);
  });

  it('a criterion without a value is refused: it would match no Consent, and its subscriber would miss them all', async () => {
    const res = await national.post('/Subscription', subscription(`${receiver.base}/hooks/empty-value`, { criteria: 'Consent?category=' }));
    assert.ok(res.status >= 400 && res.status < 500, `${res.status} ${res.text}`);
    assert.match(res.body.issue[0].diagnostics, /category/);
  });

  it('break-the-glass neither creates nor reaches a Subscription: it opens one record in an emergency', async () => {
    // Found by a second reading (stop 23): a BTG Subscription would be pushed every patient's Consents.
    const btg = await h.as('emergency', { purpose: 'BTG' });
    const refused = await btg.post('/Subscription', subscription(`${receiver.base}/hooks/btg`, { criteria: 'Consent?' }));
    assert.equal(refused.status, 403, refused.text);
    assert.match(refused.body.issue[0].diagnostics, /break-the-glass/);
    const treating = await h.as('emergency');
    const sub = await subscribe(treating, subscription(`${receiver.base}/hooks/ed`, { criteria: 'Consent?' }));
    // Its channel headers are the receiver's secrets: read, listed or deleted only as the registered client would start it.
    for (const res of [await btg.get(`/Subscription/${sub.id}`), await btg.get('/Subscription'), await btg.delete(`/Subscription/${sub.id}`)]) assert.equal(res.status, 403, res.text);
    assert.equal((await treating.delete(`/Subscription/${sub.id}`)).status, 204);
  });

  it('every matching Consent change is POSTed with the resource, the headers and its version; a Consent leaving the criteria and a deletion too', async () => {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/full`));
    const c = (await gp.post('/Consent', consent(pid))).body as Consent;
    await gp.put(`/Consent/${c.id}`, { ...consent(pid), id: c.id, status: 'inactive' });
    await gp.put(`/Consent/${c.id}`, { ...consent(pid), id: c.id, status: 'inactive', category: [OTHER_CATEGORY] });
    await gp.put(`/Consent/${c.id}`, { ...consent(pid), id: c.id, status: 'active', category: [OTHER_CATEGORY] });
    assert.equal((await gp.delete(`/Consent/${c.id}`)).status, 204);
    const unrelated = (await gp.post('/Consent', consent(pid, { category: [OTHER_CATEGORY] }))).body.id;
    assert.equal(receiver.received.length, 0, 'nothing is sent inside the request');
    await deliver();
    const got = receiver.received.filter((r) => r.path === '/hooks/full');
    assert.deepEqual(
      got.map((r) => [r.headers['x-custodian-resource'], r.headers['x-custodian-event']]),
      [
        [`Consent/${c.id}/_history/1`, 'create'],
        [`Consent/${c.id}/_history/2`, 'update'],
        [`Consent/${c.id}/_history/3`, 'update'],
      ],
      'versions 4 and 5 (and the unrelated Consent) never matched the criteria, before or after',
    );
    assert.ok(!got.some((r) => r.body.includes(unrelated)));
    assert.equal(got[0].method, 'POST');
    assert.equal(got[0].headers.authorization, 'Bearer receiver-secret');
    assert.equal(got[0].headers['x-custodian-subscription'], `Subscription/${sub.id}`);
    assert.match(String(got[0].headers['content-type']), /^application\/fhir\+json/);
    assert.equal((JSON.parse(got[1].body) as Consent).status, 'inactive');
    assert.equal((JSON.parse(got[2].body) as Consent).category![0].coding![0].code, '64292-6', 'the version that left the criteria is sent');
    // each notification sent was audited first: a PrivacyDisclosure naming the version and the patient
    const events = ((await h.api.get('/AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110106&_count=1000')).body as Bundle)
      .entry!.map((e) => e.resource as AuditEvent)
      .filter((e) => e.entity!.some((x) => x.description?.includes(`Subscription/${sub.id}`)));
    assert.deepEqual(events.map((e) => e.entity!.find((x) => x.role?.code === '4')!.what!.reference).sort(), got.map((r) => String(r.headers['x-custodian-resource'])).sort());
    assert.ok(events.every((e) => e.entity!.some((x) => x.what?.reference === `Patient/${pid}`) && e.action === 'R'));
    await national.delete(`/Subscription/${sub.id}`);
  });

  it('criteria Consent? gets every change, deletions included; without a payload the POST has no body', async () => {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/empty`, { criteria: 'Consent?' }, { payload: undefined }));
    const c = (await gp.post('/Consent', consent(pid, { category: [OTHER_CATEGORY] }))).body.id;
    await gp.delete(`/Consent/${c}`);
    await deliver();
    const got = receiver.received.filter((r) => r.path === '/hooks/empty');
    assert.deepEqual(got.map((r) => [r.headers['x-custodian-resource'], r.headers['x-custodian-event'], r.body, r.headers['content-type']]), [
      [`Consent/${c}/_history/1`, 'create', '', undefined],
      [`Consent/${c}/_history/2`, 'delete', '', undefined],
    ]);
    await national.delete(`/Subscription/${sub.id}`);
  });

  it('the outbox is written in the Consent\'s transaction: a rolled-back write queues nothing', async () => {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/tx`, { criteria: 'Consent?' }));
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Consent' }, resource: consent(pid) },
        { request: { method: 'PUT', url: 'Consent/no-such-patient' }, resource: { ...consent('no-such-patient'), id: 'no-such-patient' } },
      ],
    };
    assert.notEqual((await gp.post('/', bundle)).status, 200);
    const rows = await h.store.driver.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM subscription_outbox WHERE subscription_id = ?', [sub.id]);
    assert.equal(Number(rows!.n), 0);
    const c = (await gp.post('/Consent', consent(pid))).body.id;
    const queued = await h.store.driver.get<{ n: number | string }>('SELECT COUNT(*) AS n FROM subscription_outbox WHERE subscription_id = ? AND resource_id = ?', [sub.id, c]);
    assert.equal(Number(queued!.n), 1, 'queued by the time the write was answered');
    await deliver();
    await national.delete(`/Subscription/${sub.id}`);
  });

  it('retries with exponential backoff, goes to error with a reason after repeated failure, and back to active when delivery recovers', async () => {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/flaky`, { criteria: 'Consent?' }));
    receiver.status = 500;
    const c1 = (await gp.post('/Consent', consent(pid))).body.id;
    const c2 = (await gp.post('/Consent', consent(pid))).body.id;
    const attempts = () => receiver.received.filter((r) => r.path === '/hooks/flaky').length;
    await deliver();
    assert.equal(attempts(), 1, 'the first failure stops the queue');
    await deliver();
    assert.equal(attempts(), 1, 'nothing before the backoff is over');
    h.clock.now += 1000;
    await deliver();
    assert.equal(attempts(), 2);
    h.clock.now += 1999;
    await deliver();
    assert.equal(attempts(), 2, 'the second wait is twice as long');
    h.clock.now += 1;
    await deliver();
    assert.equal(attempts(), 3);
    const failing = (await national.get(`/Subscription/${sub.id}`)).body as Subscription;
    assert.equal(failing.status, 'error');
    assert.match(failing.error!, /failed 3 times in a row; last: the endpoint answered HTTP 500/);
    assert.notEqual(failing.meta!.versionId, sub.meta!.versionId);
    receiver.status = 200;
    h.clock.now += 4000;
    await deliver();
    const recovered = (await national.get(`/Subscription/${sub.id}`)).body as Subscription;
    assert.equal(recovered.status, 'active');
    assert.equal(recovered.error, undefined);
    const ok = receiver.received.filter((r) => r.path === '/hooks/flaky').slice(3);
    assert.deepEqual(ok.map((r) => r.headers['x-custodian-resource']), [`Consent/${c1}/_history/1`, `Consent/${c2}/_history/1`], 'every queued change, in order');
    await national.delete(`/Subscription/${sub.id}`);
  });

  it('a subscriber that may not see a Consent is sent nothing about it, with or without payload', async () => {
    const sub = await subscribe(hospital, subscription(`${receiver.base}/hooks/hospital`, { criteria: 'Consent?' }));
    const hidden = (await gp.post('/Consent', consent(pid))).body.id;
    const namesHospital = (await gp.post('/Consent', consent(pid, { provision: { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] } }))).body.id;
    await deliver();
    const got = receiver.received.filter((r) => r.path === '/hooks/hospital');
    assert.deepEqual(got.map((r) => r.headers['x-custodian-resource']), [`Consent/${namesHospital}/_history/1`]);
    assert.ok(!got.some((r) => r.body.includes(hidden)));
    const status = (await gp.get(`/Consent/${hidden}/$delivery-status`)).body as Parameters;
    const line = status.parameter!.find((p) => p.name === 'delivery' && part(p, 'subscriber')!.valueString === 'hospital')!;
    assert.equal(part(line, 'status')!.valueCode, 'withheld');
    assert.match(part(line, 'error')!.valueString!, /consent-restricted/);
    await hospital.delete(`/Subscription/${sub.id}`);
  });

  it('a notification is a disclosure: a Subscription for secondary use is sent nothing of a patient who opted out', async () => {
    // Found by a second reading (stop 23): decided as an access, a research Subscription was
    // pushed the Consents naming it of patients who had opted out, which an export leaves out.
    const research = await h.as('research', { purpose: 'HRESCH' });
    const sub = await subscribe(research, subscription(`${receiver.base}/hooks/research`, { criteria: 'Consent?' }));
    const namesResearch = { provision: { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('RES1') }] } };
    const objector = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id as string;
    assert.equal((await gp.post('/Consent', nationalOptOut(objector))).status, 201);
    const withheld = (await gp.post('/Consent', consent(objector, namesResearch))).body.id as string;
    const other = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id as string;
    const sent = (await gp.post('/Consent', consent(other, namesResearch))).body.id as string;
    await deliver();
    const got = receiver.received.filter((r) => r.path === '/hooks/research');
    assert.deepEqual(got.map((r) => r.headers['x-custodian-resource']), [`Consent/${sent}/_history/1`]);
    assert.ok(!got.some((r) => r.body.includes(objector) || r.body.includes(withheld)));
    assert.equal((await research.get(`/Consent/${withheld}`)).status, 200, 'read (an access), it is still the named organisation\'s');
    await research.delete(`/Subscription/${sub.id}`);
  });

  /**
   * A national Subscription to `hook` while `hold` is in force (undone by the function it
   * returns): a Consent written meanwhile is sent nothing and its notification is pending, not
   * withheld; once undone (and past the backoff), what waited is sent.
   */
  async function heldThenSent(hook: string, hold: () => () => void): Promise<void> {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/${hook}`, { criteria: 'Consent?' }));
    const sent = () => receiver.received.filter((r) => r.path === `/hooks/${hook}`).map((r) => r.headers['x-custodian-resource']);
    const undo = hold();
    let c: string;
    try {
      c = (await gp.post('/Consent', consent(pid))).body.id as string;
      await deliver();
      assert.deepEqual(sent(), [], 'nothing sent');
      const status = (await gp.get(`/Consent/${c}/$delivery-status`)).body as Parameters;
      const line = status.parameter!.find((p) => p.name === 'delivery' && part(p, 'subscription')!.valueReference!.reference === `Subscription/${sub.id}`)!;
      assert.ok(['pending', 'failing'].includes(part(line, 'status')!.valueCode!), `held, not withheld: ${part(line, 'status')!.valueCode}`);
    } finally {
      undo();
    }
    await h.store.driver.run('UPDATE subscriptions SET next_attempt_at = 0');
    await deliver();
    assert.deepEqual(sent(), [`Consent/${c}/_history/1`]);
    await national.delete(`/Subscription/${sub.id}`);
  }

  it('an endpoint taken off the allow-list since is sent nothing; its notifications wait, and leave once it is allowed again', async () => {
    // Found by a second reading (stop 23): the allow-list was checked at create and update only.
    await heldThenSent('narrowed', () => {
      const feed = h.config.feed as { subscriptionEndpoints: readonly URL[] };
      const allowed = feed.subscriptionEndpoints;
      feed.subscriptionEndpoints = [new URL(`${receiver.base}/hooks/elsewhere`)];
      return () => (feed.subscriptionEndpoints = allowed);
    });
  });

  it('a subscriber whose scopes no longer cover Consents is sent nothing, and its notifications wait instead of being withheld for good', async () => {
    // Found by a second reading (stop 23): a momentary scope loss (a registry edit undone) withheld
    // what was queued meanwhile, for good: that opt-out never reached the national service by push.
    await heldThenSent('rescoped', () => {
      let original: Record<string, unknown>[] | undefined;
      h.editClients((entries) => {
        original = structuredClone(entries);
        return entries.map((e) => (e.client_id === 'national' ? { ...e, scopes: ['system/Patient.rs'] } : e));
      });
      return () => h.editClients(() => original!);
    });
  });

  it('$delivery-status shows, per version and Subscription, delivered / pending / failing, for the custodian and auditors only', async () => {
    const ok = await subscribe(national, subscription(`${receiver.base}/hooks/status-ok`, { criteria: 'Consent?' }));
    const bad = await subscribe(national, subscription(`${receiver.base}/hooks/status-bad`, { criteria: 'Consent?' }));
    const c = (await gp.post('/Consent', consent(pid))).body.id;
    const before = (await gp.get(`/Consent/${c}/$delivery-status`)).body as Parameters;
    assert.deepEqual(before.parameter!.filter((p) => p.name === 'pending').map((p) => p.valueInteger), [2], 'recorded, not yet sent: visible at once');
    await deliver();
    receiver.failing.add('/hooks/status-bad');
    await gp.put(`/Consent/${c}`, { ...consent(pid), id: c, status: 'inactive' });
    await deliver();
    await gp.put(`/Consent/${c}`, { ...consent(pid), id: c, status: 'active' });
    await deliver();
    receiver.failing.clear();
    const res = await gp.get(`/Consent/${c}/$delivery-status`);
    assert.equal(res.status, 200, res.text);
    const lines = (res.body as Parameters).parameter!.filter((p) => p.name === 'delivery');
    const state = (version: number, sub: string) =>
      lines.filter((l) => part(l, 'version')!.valueInteger === version && part(l, 'subscription')!.valueReference!.reference === `Subscription/${sub}`).map((l) => part(l, 'status')!.valueCode);
    assert.deepEqual([state(1, ok.id!), state(1, bad.id!), state(2, ok.id!), state(2, bad.id!), state(3, ok.id!), state(3, bad.id!)], [
      ['delivered'],
      ['delivered'],
      ['delivered'],
      ['failing'],
      ['delivered'],
      ['pending'],
    ]);
    const summary = Object.fromEntries((res.body as Parameters).parameter!.filter((p) => p.valueInteger !== undefined).map((p) => [p.name, p.valueInteger]));
    assert.deepEqual(summary, { delivered: 4, pending: 1, failing: 1, withheld: 0, cancelled: 0 });
    const delivered = lines.find((l) => part(l, 'status')!.valueCode === 'delivered')!;
    assert.ok(part(delivered, 'delivered')!.valueInstant && part(delivered, 'queued')!.valueInstant);
    const failing = lines.find((l) => part(l, 'status')!.valueCode === 'failing')!;
    assert.match(part(failing, 'error')!.valueString!, /HTTP 500/);
    assert.equal(part(failing, 'attempts')!.valueInteger, 1);
    // The custodian is not told where other clients receive their notifications; auditors are.
    assert.ok(!lines.some((l) => part(l, 'endpoint')), 'no endpoint of another client');
    assert.ok(!res.text.includes(receiver.base), res.text);
    // who may see it
    const auditor = await h.as('auditor', { purpose: 'HOPERAT' });
    const audited = await auditor.get(`/Consent/${c}/$delivery-status`);
    assert.equal(audited.status, 200);
    assert.ok(audited.text.includes(`${receiver.base}/hooks/status-ok`), 'auditors see the endpoints');
    assert.equal((await national.get(`/Consent/${c}/$delivery-status`)).status, 403);
    assert.equal((await hospital.get(`/Consent/${c}/$delivery-status`)).status, 403);
    assert.equal((await hospital.get('/Consent/unknown-consent/$delivery-status')).status, 403, 'nor whether a Consent exists');
    // across all Consents, what is not delivered: for auditors
    const all = (await auditor.get('/Consent/$delivery-status?_count=50')).body as Parameters;
    const undelivered = all.parameter!.filter((p) => p.name === 'delivery' && part(p, 'consent')!.valueReference!.reference!.startsWith(`Consent/${c}/`));
    assert.deepEqual(undelivered.map((p) => part(p, 'status')!.valueCode).sort(), ['failing', 'pending']);
    assert.equal((await gp.get('/Consent/$delivery-status')).status, 403);
    await national.delete(`/Subscription/${ok.id}`);
    await national.delete(`/Subscription/${bad.id}`);
  });

  it('a key rotated out stops the Subscriptions made with it; the client renews one by updating it with a token of its new key, and nothing queued is lost', async () => {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/rotate`, { criteria: 'Consent?' }));
    const original = JSON.parse(JSON.stringify(h.clients.get('national')!.entry)) as Record<string, unknown>;
    const fresh = await generateJwkPair();
    const withKeys = (keys: unknown[]) => h.editClients((entries) => entries.map((e) => (e.client_id === 'national' ? { ...e, jwks: { keys } } : e)));
    const oldKeys = (original.jwks as { keys: unknown[] }).keys;
    try {
      withKeys([...oldKeys, fresh.publicJwk]);
      const renewed = new Api(h.app.express, await h.token('national', { purpose: 'PUBHLTH', jwk: fresh.privateJwk }));
      withKeys([fresh.publicJwk]); // the old key leaves (say it leaked)
      const c = (await gp.post('/Consent', consent(pid))).body.id;
      await deliver();
      assert.equal(receiver.received.filter((r) => r.path === '/hooks/rotate').length, 0, 'nothing is sent on behalf of the old key');
      const stored = await h.store.driver.get<{ failures: number | string }>('SELECT failures FROM subscriptions WHERE id = ?', [sub.id]);
      assert.ok(Number(stored!.failures) >= 1, 'counted as a failed delivery');
      const put = await renewed.put(`/Subscription/${sub.id}`, { ...subscription(`${receiver.base}/hooks/rotate`, { criteria: 'Consent?' }), id: sub.id });
      assert.equal(put.status, 200, put.text);
      await deliver();
      const got = receiver.received.filter((r) => r.path === '/hooks/rotate');
      assert.equal(got.length, 1, 'the version queued while it was stopped is delivered');
      assert.equal((JSON.parse(got[0].body) as Consent).id, c);
    } finally {
      h.editClients((entries) => entries.map((e) => (e.client_id === 'national' ? original : e)));
      await national.delete(`/Subscription/${sub.id}`);
    }
  });

  it('an off or deleted Subscription queues nothing more, and its pending notifications are cancelled', async () => {
    const sub = await subscribe(national, subscription(`${receiver.base}/hooks/off`, { criteria: 'Consent?' }));
    const off = await national.put(`/Subscription/${sub.id}`, { ...subscription(`${receiver.base}/hooks/off`, { criteria: 'Consent?', status: 'off' }), id: sub.id });
    assert.equal(off.body.status, 'off');
    const c1 = (await gp.post('/Consent', consent(pid))).body.id;
    assert.equal(Number((await h.store.driver.get<{ n: number }>('SELECT COUNT(*) AS n FROM subscription_outbox WHERE subscription_id = ?', [sub.id]))!.n), 0);
    await national.put(`/Subscription/${sub.id}`, { ...subscription(`${receiver.base}/hooks/off`, { criteria: 'Consent?' }), id: sub.id });
    await gp.put(`/Consent/${c1}`, { ...consent(pid), id: c1, status: 'inactive' });
    await national.delete(`/Subscription/${sub.id}`);
    await deliver();
    assert.equal(receiver.received.filter((r) => r.path === '/hooks/off').length, 0);
    const status = (await gp.get(`/Consent/${c1}/$delivery-status`)).body as Parameters;
    assert.equal(status.parameter!.find((p) => p.name === 'cancelled')!.valueInteger, 1);
  });

  it('bad Subscriptions get a clear 4xx OperationOutcome and nothing is stored', async () => {
    const base = `${receiver.base}/hooks/bad`;
    const cases: [unknown, number, RegExp][] = [
      [subscription('https://evil.example/hooks'), 422, /allow-list/],
      [subscription(`${receiver.base}/other`), 422, /allow-list/],
      [subscription(`${receiver.base}/hooks-evil`), 422, /allow-list/],
      [subscription(`http://user:pw@127.0.0.1:${receiver.port}/hooks`), 422, /credentials/],
      [subscription(`ftp://127.0.0.1/hooks`), 422, /http or https/],
      [subscription(base, { criteria: 'Patient?name=x' }), 422, /Consent search/],
      [subscription(base, { criteria: 'Consent?date=ge2020' }), 422, /token search parameters/],
      [subscription(base, { criteria: 'Consent?colour=red' }), 400, /colour/],
      [subscription(base, { criteria: 'Consent?_count=5' }), 422, /result parameters/],
      [subscription(base, {}, { type: 'websocket' }), 422, /rest-hook/],
      [subscription(base, {}, { payload: 'text/plain' }), 422, /payload/],
      [subscription(base, {}, { header: ['Host: evil.example'] }), 422, /may not set Host/],
      [subscription(base, {}, { header: ['X-Custodian-Resource: forged'] }), 422, /may not set/],
      [subscription(base, {}, { header: ['no colon here'] }), 422, /Name: value/],
      [subscription(base, { status: 'error' }), 422, /set by the server/],
      [{ ...subscription(base), reason: undefined }, 400, /reason|required/i],
      [{ ...subscription(base), resourceType: 'Consent' }, 400, /resourceType/],
    ];
    for (const [body, status, message] of cases) {
      const res = await national.post('/Subscription', body);
      assert.equal(res.status, status, `${JSON.stringify(body).slice(0, 160)} -> ${res.status} ${res.text}`);
      assert.equal(res.body.resourceType, 'OperationOutcome');
      assert.match(JSON.stringify(res.body.issue), message);
    }
    assert.equal(((await national.get('/Subscription')).body as Bundle).total, 0, 'nothing was stored');
    // a client without the scope to search Consents may not subscribe to them
    const noScope = await h.as('gp', { scope: 'system/Patient.cruds' });
    assert.equal((await noScope.post('/Subscription', subscription(base))).status, 403);
  });
});
