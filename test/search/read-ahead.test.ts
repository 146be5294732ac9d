import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { Bundle, Consent } from 'fhir/r4';
import type { Api } from '../support/api';
import { consent, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';
import { org } from '../feed/fixtures';

/**
 * Bulk walks read their next page ahead while a page's response waits for its AuditEvents
 * (gate/read-ahead.ts). What was read ahead is rows only: these tests show that a walk sees every
 * resource once, that any commit between two pages makes the next one read again (so it shows
 * the store as it is when it is asked for), and that rows read ahead are decided for the request
 * that takes them, by the rules in force then.
 */
describe('Search: bulk walks read their next page ahead, and never serve what changed since', () => {
  let h: Harness;
  let gp: Api;
  let national: Api;
  const patients: string[] = [];
  const PER_PATIENT = 90;

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] },
      ],
    });
    gp = await h.as('gp');
    national = await h.as('national', { purpose: 'PUBHLTH' });
    for (const family of ['Walker', 'Walker', 'Walker', 'Rambler', 'Rambler']) {
      const created = await gp.post('/Patient', patient({ name: [{ family }], managingOrganization: org('GP1') }));
      assert.equal(created.status, 201, created.text);
      patients.push(created.body.id as string);
    }
    // Each patient's Consents together, so that a page holds few patients (and few AuditEvents).
    const writer = { clientId: 'gp', organization: 'https://fhir.nhs.uk/Id/ods-organization-code|GP1' };
    for (const p of patients) {
      const many = Array.from({ length: PER_PATIENT }, () => ({ ...consent(p), id: randomUUID() }));
      await h.store.transaction((tx) => tx.createMany('Consent', many, writer));
    }
  });
  after(() => h.close());

  const stats = () => ({ ...h.app.gate.readAheadStats });

  async function page(api: Api, url: string): Promise<{ bundle: Bundle; next?: string }> {
    const res = await api.get(url);
    assert.equal(res.status, 200, res.text);
    const bundle = res.body as Bundle;
    const next = bundle.link?.find((l) => l.relation === 'next')?.url;
    return { bundle, next: next?.replace('http://custodian.test/fhir', '') };
  }

  async function walk(api: Api, first: string): Promise<{ pages: Bundle[] }> {
    const pages: Bundle[] = [];
    let url: string | undefined = first;
    while (url) {
      const p = await page(api, url);
      pages.push(p.bundle);
      url = p.next;
    }
    return { pages };
  }

  const idsOf = (b: Bundle) => (b.entry ?? []).map((e) => e.resource!.id!);

  it('a walk 200 a page sees every Consent once, in order, and every page after the first was read ahead', async () => {
    const before = stats();
    const { pages } = await walk(national, '/Consent?_count=200');
    const ids = pages.flatMap(idsOf);
    assert.deepEqual(pages.map((p) => idsOf(p).length), [200, 200, 50]);
    assert.equal(new Set(ids).size, patients.length * PER_PATIENT, 'each Consent once');
    const after = stats();
    assert.equal(after.started - before.started, 2, 'pages 2 and 3 were read ahead');
    assert.equal(after.used - before.used, 2, 'and each read ahead was used');
    assert.equal(after.stale - before.stale, 0);
    // The same walk read without read-ahead (pages of fewer than 200 are never read ahead) lists the same, in the same order.
    const small = await walk(national, '/Consent?_count=150');
    assert.deepEqual(small.pages.flatMap(idsOf), ids);
    assert.equal(stats().started, after.started, 'no read-ahead for pages of 150');
  });

  it('a Consent deleted, updated or created between two pages: the next page is read again and shows the store as it is now', async () => {
    const order = (await walk(national, '/Consent?_count=200')).pages.flatMap(idsOf);
    const before = stats();
    const first = await page(national, '/Consent?_count=200');
    assert.deepEqual(idsOf(first.bundle), order.slice(0, 200));
    // Both in the page read ahead: one deleted, one updated.
    const gone = order[250];
    const changed = order[260];
    assert.equal((await gp.delete(`/Consent/${gone}`)).status, 204);
    const current = (await gp.get(`/Consent/${changed}`)).body as Consent;
    const updated = await gp.put(`/Consent/${changed}`, { ...current, status: 'inactive' });
    assert.equal(updated.status, 200, updated.text);
    const second = await page(national, first.next!);
    const ids = idsOf(second.bundle);
    assert.ok(!ids.includes(gone), 'the Consent deleted after page 1 is not on page 2');
    assert.deepEqual(ids, order.slice(200, 401).filter((id) => id !== gone));
    const entry = second.bundle.entry!.find((e) => e.resource!.id === changed)!.resource as Consent;
    assert.equal(entry.meta!.versionId, '2', 'the Consent updated after page 1 is on page 2 as it is now');
    assert.equal(entry.status, 'inactive');
    const after = stats();
    assert.equal(after.stale - before.stale, 1, 'the rows read ahead were stale and were not used');
    assert.equal(after.used - before.used, 0);

    // A Consent created between pages is on the next one (the last: it comes last in the order).
    const created = await gp.post('/Consent', consent(patients[0]));
    assert.equal(created.status, 201, created.text);
    const third = await page(national, second.next!);
    assert.deepEqual(idsOf(third.bundle), [...order.slice(401), created.body.id]);
    assert.equal(third.next, undefined);
    assert.equal(stats().stale - after.stale, 1, 'the rows read ahead before the create were not used');
  });

  it('a Patient changed between two pages of a chained search: the next page is read again', async () => {
    // Three Walkers' Consents; the third Walker's are all past page 1.
    const chained = '/Consent?patient.family=Walker&_count=100';
    const first = await page(gp, chained);
    assert.equal(first.bundle.entry!.length, 100);
    const walker3 = patients[2];
    const p = (await gp.get(`/Patient/${walker3}`)).body;
    assert.equal((await gp.put(`/Patient/${walker3}`, { ...p, name: [{ family: 'Strider' }] })).status, 200);
    const before = stats();
    const rest = (await walk(gp, first.next!)).pages.flatMap(idsOf);
    const ofWalker3 = new Set(((await walk(gp, `/Consent?patient=${walker3}&_count=1000`)).pages.flatMap(idsOf)));
    assert.ok(rest.length > 0);
    assert.ok(!rest.some((id) => ofWalker3.has(id)), 'no Consent of the renamed patient after the rename');
    assert.equal(stats().used - before.used, 0, 'pages of 100 are not read ahead');
    // Pages of 200: the page read ahead after the rename back is stale, and read again.
    assert.equal((await gp.put(`/Patient/${walker3}`, { ...p, name: [{ family: 'Walker' }] })).status, 200);
    const big = await page(gp, chained.replace('_count=100', '_count=200'));
    assert.equal((await gp.put(`/Patient/${walker3}`, { ...p, name: [{ family: 'Strider' }] })).status, 200);
    const stale = stats().stale;
    const later = (await walk(gp, big.next!)).pages.flatMap(idsOf);
    assert.equal(stats().stale - stale, 1);
    assert.ok(!later.some((id) => ofWalker3.has(id)), 'no Consent of the renamed patient after the rename');
  });

  it('rows read ahead are decided for the request that takes them: a role taken away between pages takes the page with it', async () => {
    const first = await page(national, '/Consent?_count=200');
    assert.equal(first.bundle.entry!.length, 200);
    const before = stats();
    h.editClients((entries) => entries.map((e) => (e.client_id === 'national' ? { ...e, roles: [] } : e)));
    try {
      const second = await page(national, first.next!);
      assert.equal(stats().used - before.used, 1, 'the rows read ahead were taken');
      assert.deepEqual(idsOf(second.bundle), [], 'and decided as the client is now: no longer a national service, named by no Consent, it sees none');
    } finally {
      h.editClients((entries) => entries.map((e) => (e.client_id === 'national' ? { ...e, roles: ['national-service'] } : e)));
    }
  });
});
