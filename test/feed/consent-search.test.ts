import assert from 'node:assert/strict';
import type { Bundle } from 'fhir/r4';
import type { Api } from '../support/api';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

import { nationalOptOut, OPT_OUT_CATEGORY, org } from './fixtures';

/** How a national service pulls Consents by search: searchset Bundles, everything for it, the rules for everyone else. */
describe('Feed: Consent search for national services', () => {
  let h: Harness;
  let national: Api;
  let hospital: Api;
  const start = Date.UTC(2031, 5, 1, 8, 0, 0);
  const ids: string[] = [];

  before(async () => {
    h = await startHarness({
      frozenAt: start,
      clients: [
        { clientId: 'gp1', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'gp2', ods: 'GP2', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Consent.rs'], purposes: ['TREAT'] },
      ],
    });
    national = await h.as('national', { purpose: 'PUBHLTH' });
    hospital = await h.as('hospital');
    for (const gp of ['gp1', 'gp2']) {
      const api = await h.as(gp);
      const p = (await api.post('/Patient', patient({ managingOrganization: org(gp.toUpperCase()) }))).body.id;
      for (let i = 0; i < 3; i++) {
        h.clock.now += 60000;
        const created = await api.post('/Consent', i === 0 ? nationalOptOut(p) : consent(p));
        assert.equal(created.status, 201, created.text);
        ids.push(created.body.id);
      }
    }
  });
  after(() => h.close());

  it('a national service gets every Consent changed after a time, by category, as a searchset', async () => {
    const since = new Date(start + 90000).toISOString();
    const all = (await national.get(`/Consent?_lastUpdated=gt${since}&_count=1000`)).body as Bundle;
    assert.equal(all.type, 'searchset');
    assert.equal(all.entry!.length, 5);
    const optOuts = (await national.get(`/Consent?_lastUpdated=gt${since}&category=${encodeURIComponent(OPT_OUT_CATEGORY)}&_count=1000`)).body as Bundle;
    assert.deepEqual(optOuts.entry!.map((e) => e.resource!.id), [ids[3]], 'only gp2\'s opt-out is after the instant');
    assert.equal(((await national.get('/Consent?_summary=count')).body as Bundle).total, 6);
  });

  it('everyone else is subject to the consent rules: the hospital, named by none, sees none', async () => {
    const b = (await hospital.get('/Consent?_count=1000')).body as Bundle;
    assert.equal(b.entry, undefined);
    assert.equal(((await hospital.get('/Consent?_summary=count')).body as Bundle).total, 0);
    const gp1 = await h.as('gp1');
    assert.equal(((await gp1.get('/Consent?_count=1000')).body as Bundle).entry!.length, 3, 'a custodian sees its own patients\' Consents only');
  });
});
