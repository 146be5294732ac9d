import assert from 'node:assert/strict';
import type { AuditEvent, Bundle } from 'fhir/r4';
import type { Api, ApiResponse } from '../support/api';
import { consentFor, managedPatient as patient, NHS, org } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const HIDDEN = { family: 'Hiddenham', nhs: '9434765919' };

const actor = (code: string) => [{ role: { text: 'recipient' }, reference: org(code) }];

/**
 * The search features that reach across resources — chaining, `_has`, `_include`,
 * `_revinclude`, `_sort`, system search — must not become a way around the Consent: a criterion
 * is only satisfied through resources the asker may see, and included resources are decided and
 * audited like matches.
 */
describe('Search: chains, _has, includes and sorting never reveal what the Consent hides', () => {
  let h: Harness;
  let gp: Api;
  let hospital: Api;
  let auditor: Api;
  const id: Record<string, string> = {};

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.rs', 'system/Consent.rs'], purposes: ['TREAT'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
      ],
    });
    gp = await h.as('gp');
    hospital = await h.as('hospital');
    auditor = await h.as('auditor', { purpose: 'HOPERAT' });
    id.open = (await gp.post('/Patient', patient('Openshaw', '9000000009'))).body.id;
    id.hidden = (await gp.post('/Patient', patient(HIDDEN.family, HIDDEN.nhs))).body.id;
    // The hospital may see Openshaw, and the Consent that says so.
    id.openPermit = (await gp.post('/Consent', consentFor(id.open, { type: 'permit', actor: actor('HOSP1') }))).body.id;
    // A Consent of Openshaw's that names only another organisation: hidden from the hospital.
    id.openOther = (await gp.post('/Consent', consentFor(id.open, { type: 'permit', actor: actor('HOSP2') }, { category: [{ coding: [{ system: 'http://loinc.org', code: '64292-6' }] }] }))).body.id;
    // A Consent of Hiddenham's that names the hospital (to refuse it): the hospital may see this
    // Consent (it is named in it), but not the Patient it is about.
    id.hiddenDeny = (await gp.post('/Consent', consentFor(id.hidden, { type: 'deny', actor: actor('HOSP1') }))).body.id;
    for (const [k, v] of Object.entries(id)) assert.ok(v, k);
  });
  after(() => h.close());

  /**
   * Nothing of the hidden Patient or the hidden Consent in the answer. The Consent naming the
   * hospital is visible to it by the policy and carries its patient's id in `patient`; any other
   * appearance of that id is a leak.
   */
  function noLeak(res: ApiResponse): void {
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 300));
    const text = JSON.stringify(res.body, (k, v) => (k === 'link' ? undefined : k === 'patient' && v?.reference === `Patient/${id.hidden}` ? '(the visible Consent\'s patient)' : v));
    assert.doesNotMatch(text, new RegExp(`${HIDDEN.family}|${HIDDEN.nhs}|${id.hidden}|${id.openOther}`), text.slice(0, 400));
  }
  const idsOf = (b: Bundle, mode = 'match') => (b.entry ?? []).filter((e) => e.search?.mode === mode).map((e) => e.resource!.id);

  it('sanity: the hospital sees the Consent naming it about the hidden patient, but not the patient', async () => {
    assert.equal((await hospital.get(`/Consent/${id.hiddenDeny}`)).status, 200);
    assert.equal((await hospital.get(`/Patient/${id.hidden}`)).status, 403);
    assert.equal((await hospital.get(`/Consent/${id.openOther}`)).status, 403);
  });

  describe('chaining', () => {
    it('a chain through a hidden Patient matches nothing, so it cannot confirm an NHS number or a name', async () => {
      for (const q of [`patient.identifier=${NHS}|${HIDDEN.nhs}`, `patient.family=${HIDDEN.family}`, `patient.identifier=${HIDDEN.nhs}`, `patient:Patient._id=${id.hidden}`]) {
        const res = await hospital.get(`/Consent?${q}&_total=accurate`);
        noLeak(res);
        assert.equal(res.body.total, 0, q);
      }
      const count = await hospital.get(`/Consent?patient.identifier=${NHS}|${HIDDEN.nhs}&_summary=count`);
      assert.equal(count.body.total, 0);
    });

    it('the same chain works for the custodian, and through a visible Patient for the hospital', async () => {
      assert.deepEqual(idsOf((await gp.get(`/Consent?patient.identifier=${NHS}|${HIDDEN.nhs}`)).body), [id.hiddenDeny]);
      assert.deepEqual(idsOf((await hospital.get(`/Consent?patient.identifier=${NHS}|9000000009`)).body), [id.openPermit]);
    });
  });

  describe('_has', () => {
    it('is satisfied only by Consents the asker may see', async () => {
      // Openshaw has a 64292-6 Consent, but the hospital may not see it: no match, no hint.
      const res = await hospital.get('/Patient?_has:Consent:patient:category=64292-6&_total=accurate');
      noLeak(res);
      assert.equal(res.body.total, 0);
      assert.equal((await hospital.get('/Patient?_has:Consent:patient:category=64292-6&_summary=count')).body.total, 0);
      // The custodian sees it.
      assert.deepEqual(idsOf((await gp.get('/Patient?_has:Consent:patient:category=64292-6')).body), [id.open]);
      // And the visible Consent does satisfy it for the hospital.
      assert.deepEqual(idsOf((await hospital.get('/Patient?_has:Consent:patient:category=59284-0')).body), [id.open]);
    });
  });

  describe('_include and _revinclude', () => {
    it('_include leaves out a referenced Patient the asker may not see', async () => {
      const res = await hospital.get('/Consent?_include=Consent:patient&_count=100');
      noLeak(res);
      assert.deepEqual(idsOf(res.body).sort(), [id.openPermit, id.hiddenDeny].sort());
      assert.deepEqual(idsOf(res.body, 'include'), [id.open]);
    });

    it('_revinclude leaves out Consents the asker may not see', async () => {
      const res = await hospital.get(`/Patient?_id=${id.open}&_revinclude=Consent:patient&_include=*`);
      noLeak(res);
      assert.deepEqual(idsOf(res.body, 'include'), [id.openPermit]);
    });

    it('an included resource is audited like a match', async () => {
      const requestId = `sec-include-${Date.now()}`;
      await hospital.get(`/Consent?_id=${id.openPermit}&_include=Consent:patient`, { 'X-Request-Id': requestId });
      const events = (await auditor.get(`/AuditEvent?entity:identifier=${requestId}&_count=100`)).body.entry.map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
      const touched = events.flatMap((e) => (e.entity ?? []).map((x) => x.what?.reference ?? '')).filter((r) => r.startsWith('Patient/') || r.startsWith('Consent/'));
      assert.ok(touched.some((r) => r.startsWith(`Patient/${id.open}/_history/`)), `the included Patient is on the trail: ${touched.join(' ')}`);
      assert.ok(touched.some((r) => r.startsWith(`Consent/${id.openPermit}/_history/`)));
    });
  });

  describe('sorting and system search', () => {
    it('sorted searches and their pages hold only visible resources', async () => {
      for (const q of ['/Patient?_sort=family&_count=1', '/Patient?_sort=-_lastUpdated', '/Consent?_sort=patient&_count=1']) {
        let res = await hospital.get(q);
        const seen: string[] = [];
        for (;;) {
          noLeak(res);
          seen.push(...(idsOf(res.body) as string[]));
          const next = res.body.link.find((l: { relation: string }) => l.relation === 'next');
          if (!next) break;
          res = await hospital.get(next.url.replace('http://custodian.test/fhir', ''));
        }
        assert.ok(seen.length >= 1 && !seen.includes(id.hidden), q);
      }
    });

    it('_count=0, like _summary=count, counts only what the asker may see', async () => {
      const res = await hospital.get('/Patient?_count=0');
      noLeak(res);
      assert.equal(res.body.total, 1);
      assert.equal((await gp.get('/Patient?_count=0')).body.total, 2, 'the custodian GP sees both');
    });

    it('system search filters every type the same way', async () => {
      const res = await hospital.get(`/?_id=${id.open},${id.hidden},${id.openOther},${id.openPermit}&_total=accurate`);
      noLeak(res);
      assert.deepEqual(idsOf(res.body).sort(), [id.open, id.openPermit].sort());
      assert.equal(res.body.total, 2);
    });
  });
});
