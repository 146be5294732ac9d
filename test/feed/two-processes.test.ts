import assert from 'node:assert/strict';
import { ClientRegistry, parseRegistry } from '../../server/access/registry';
import { buildApp, type App } from '../../server/app';
import { createLogger } from '../../server/log';
import { Store } from '../../server/store/store';
import type { Api } from '../support/api';
import { testSigningKey } from '../support/auth';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';
import { kickOff, org } from './fixtures';
import { Receiver } from './receiver';

/**
 * Two server processes sharing one database, both running the feed's workers: each
 * notification is delivered once (a Subscription is worked by one process at a time), and each
 * export is run by one of them.
 */
describe('Feed: two processes share the outbox and the export queue', function () {
  this.timeout(30000);
  let h: Harness;
  let store2: Store;
  let app2: App;
  let receiver: Receiver;
  let gp: Api;
  let national: Api;

  before(async () => {
    receiver = await Receiver.start();
    h = await startHarness({
      env: { CUSTODIAN_SUBSCRIPTION_ENDPOINTS: `${receiver.base}/hooks`, CUSTODIAN_EXPORT_FILE_RESOURCES: '4' },
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] },
      ],
    });
    store2 = await Store.open(h.db.config, { now: Date.now, localBase: h.config.baseUrl });
    const registry = ClientRegistry.of(parseRegistry([...h.clients.values()].map((c) => c.entry), '(test)'));
    app2 = buildApp({ config: h.config, store: store2, logger: createLogger('silent'), access: { registry, key: await testSigningKey() } });
    gp = await h.as('gp');
    national = await h.as('national', { purpose: 'PUBHLTH' });
  });
  after(async () => {
    await store2.close();
    await h.close();
    await receiver.close();
  });

  it('every notification is delivered exactly once while both processes deliver', async () => {
    const subs: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await national.post('/Subscription', { resourceType: 'Subscription', status: 'requested', reason: 'feed', criteria: 'Consent?', channel: { type: 'rest-hook', endpoint: `${receiver.base}/hooks/${i}` } });
      assert.equal(res.status, 201, res.text);
      subs.push(res.body.id);
    }
    const pid = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id;
    const versions: string[] = [];
    for (let i = 0; i < 6; i++) {
      const id = (await gp.post('/Consent', consent(pid))).body.id;
      await gp.put(`/Consent/${id}`, { ...consent(pid), id, status: 'inactive' });
      versions.push(`Consent/${id}/_history/1`, `Consent/${id}/_history/2`);
    }
    for (let round = 0; round < 50; round++) {
      const [a, b] = await Promise.all([h.app.feed.deliverer.runOnce(), app2.feed.deliverer.runOnce()]);
      if (!a && !b) break;
    }
    for (let i = 0; i < 4; i++) assert.deepEqual(receiver.versions(`/hooks/${i}`), versions, `Subscription ${i}: every version once, in order`);
  });

  it('an export is run by one process, and its files hold every Consent once', async () => {
    const status = await kickOff(national, '/$export?_type=Consent');
    await Promise.all([h.app.feed.exports.runOnce(), app2.feed.exports.runOnce()]);
    const res = await national.get(status);
    assert.equal(res.status, 200, res.text);
    const manifest = JSON.parse(res.text) as { output: { url: string }[] };
    const ids: string[] = [];
    for (const o of manifest.output) {
      const text = (await national.get(o.url.replace('http://custodian.test/fhir', ''))).text;
      ids.push(...text.trimEnd().split('\n').map((l) => JSON.parse(l).id as string));
    }
    assert.equal(ids.length, 6);
    assert.equal(new Set(ids).size, 6);
  });
});
