import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { AuditEvent } from 'fhir/r4';
import { DENY_REASONS } from '../../server/consent/decision';
import { PUBLIC_REFUSALS } from '../../server/consent/refusal';
import type { Api, ApiResponse } from '../support/api';
import { consentFor, loadJson, managedPatient as patient, org, repoJson } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const v3 = (code: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code });


/**
 * What a 403 may say (consent/refusal.ts): that the client is refused, a category that depends
 * on the request alone, and the break-the-glass hint where it applies. Never the patient's id,
 * a Consent's id, whether a Consent names this organisation or denies it, or that the patient
 * opted out. The detailed reason goes to the audit trail.
 */
describe('Consent: what a refused client is told', () => {
  let h: Harness;
  let gp: Api;
  let hospital: Api;
  let hospitalResearch: Api;
  let research: Api;
  let auditor: Api;
  /** Every id of the fixture: none may appear in a 403 body. */
  const ids: Record<string, string> = {};

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds', 'system/AuditEvent.rs'], purposes: ['TREAT', 'HOPERAT'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds', 'system/AuditEvent.rs'], purposes: ['TREAT', 'ETREAT', 'BTG', 'HRESCH'] },
        { clientId: 'research', ods: 'RES1', scopes: ['system/Patient.rs', 'system/Consent.rs'], purposes: ['HRESCH'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
        { clientId: 'ehr-audit', ods: 'HOSP1', scopes: ['system/AuditEvent.c'], purposes: ['HOPERAT'], roles: ['audit-source'] },
      ],
    });
    gp = await h.as('gp');
    hospital = await h.as('hospital');
    hospitalResearch = await h.as('hospital', { purpose: 'HRESCH' });
    research = await h.as('research', { purpose: 'HRESCH' });
    auditor = await h.as('auditor', { purpose: 'HOPERAT' });
    const source = await h.as('ehr-audit', { purpose: 'HOPERAT' });
    const mk = async (family: string, nhs: string) => (await gp.post('/Patient', patient(family, nhs))).body.id as string;
    // No Consent at all: the hospital is refused by default (no-consent).
    ids.plain = await mk('Plainfield', '9000000009');
    // A Consent denying everyone (it names no one, so only its patient's custodian may read it): consent-deny.
    ids.denied = await mk('Deniston', '9434765919');
    ids.denyConsent = (await gp.post('/Consent', consentFor(ids.denied, { type: 'deny' }))).body.id;
    // A national data opt-out, and a Consent permitting researchers it overrides: national-opt-out.
    ids.optout = await mk('Optington', '9876543210');
    const optOut: Record<string, unknown> = { ...repoJson<Record<string, unknown>>('profiles', 'examples', 'Consent-example-national-data-opt-out.json'), patient: { reference: `Patient/${ids.optout}` }, organization: [org('GP1')] };
    delete optOut.id;
    ids.optoutConsent = (await gp.post('/Consent', optOut)).body.id;
    ids.researchConsent = (await gp.post('/Consent', consentFor(ids.optout, { type: 'permit', purpose: [v3('HRESCH')] }))).body.id;
    for (const p of ['plain', 'denied', 'optout']) {
      const event = loadJson<Record<string, unknown>>('ihe', 'balp', 'json', 'instances', 'AuditEvent-ex-auditBasicReadServer.json');
      (event.entity as { what: { reference: string } }[]).find((e) => e.what.reference.startsWith('Patient/'))!.what.reference = `Patient/${ids[p]}`;
      delete event.id;
      const res = await source.post('/AuditEvent', event);
      assert.equal(res.status, 201, res.text);
      ids[`${p}Event`] = res.body.id;
    }
    for (const [k, v] of Object.entries(ids)) assert.ok(v, k);
  });
  after(() => h.close());

  /** Words that would tell the client about the patient's Consents, or the engine's reason. */
  const TELLTALES = [/opt-?out/i, /objection/i, /national/i, /Patient\//, /Consent\//, /custodian of Patient/, /break-the-glass access to/, ...DENY_REASONS.filter((r) => !(PUBLIC_REFUSALS as readonly string[]).includes(r)).map((r) => new RegExp(`\\b${r}\\b`))];

  /** The 403 body says only what this client may know. */
  function saysNothing(res: ApiResponse, where: string): void {
    const everything = `${res.text}\n${JSON.stringify(res.headers)}`;
    for (const [name, id] of Object.entries(ids)) assert.ok(!everything.includes(id), `${where}: the id of ${name} appears: ${res.text}`);
    for (const word of TELLTALES) assert.doesNotMatch(res.text, word, `${where}: ${res.text}`);
    for (const family of ['Plainfield', 'Deniston', 'Optington', '9000000009', '9434765919', '9876543210']) assert.ok(!everything.includes(family), `${where}: ${family}`);
  }
  const hint = (outcome: { issue: { code: string; details?: { coding?: { code: string }[] } }[] }) => outcome.issue.find((i) => i.code === 'suppressed')?.details?.coding?.[0].code;
  const category = (outcome: { issue: { diagnostics?: string }[] }) => /\(([a-z-]+):/.exec(outcome.issue[0].diagnostics ?? '')?.[1];

  type Kind = 'Patient' | 'Consent' | 'AuditEvent';
  /** Hidden resources of each type, each hidden for a different reason, to compare. */
  const hidden: Record<Kind, string[]> = { Patient: ['plain', 'denied', 'optout'], Consent: ['denyConsent', 'optoutConsent', 'researchConsent'], AuditEvent: ['plainEvent', 'deniedEvent', 'optoutEvent'] };
  const paths: [string, (type: Kind, id: string) => string][] = [
    ['read', (type, id) => `/${type}/${id}`],
    ['vread', (type, id) => `/${type}/${id}/_history/1`],
    ['instance history', (type, id) => `/${type}/${id}/_history`],
  ];

  for (const type of ['Patient', 'Consent', 'AuditEvent'] as const) {
    for (const [what, path] of paths) {
      it(`a refused ${what} of a ${type} names no id, no Consent and no reason, and reads the same whatever hid it`, async () => {
        const bodies = new Set<string>();
        for (const key of hidden[type]) {
          const res = await hospital.get(path(type, ids[key]));
          assert.equal(res.status, 403, `${type} ${key}: ${res.text}`);
          saysNothing(res, `${what} ${type} ${key}`);
          assert.equal(category(res.body), 'access-policy');
          bodies.add(res.text);
        }
        assert.equal(bodies.size, 1, [...bodies].join('\n'));
      });
    }

    it(`refused batch entries for ${type}s name no id and read the same whatever hid them`, async () => {
      const res = await hospital.post('/', { resourceType: 'Bundle', type: 'batch', entry: hidden[type].map((key) => ({ request: { method: 'GET', url: `${type}/${ids[key]}` } })) });
      assert.equal(res.status, 200);
      saysNothing(res, `batch of ${type}`);
      const outcomes = res.body.entry.map((e: { response: { status: string; outcome: unknown } }) => {
        assert.match(e.response.status, /^403/);
        return JSON.stringify(e.response.outcome);
      });
      assert.equal(new Set(outcomes).size, 1, outcomes.join('\n'));
    });
  }

  it('for secondary use, an opted-out patient reads exactly like one with no Consent: no opt-out hint, no break-the-glass hint', async () => {
    for (const api of [research, hospitalResearch]) {
      const optout = await api.get(`/Patient/${ids.optout}`);
      const plain = await api.get(`/Patient/${ids.plain}`);
      assert.equal(optout.status, 403);
      assert.equal(optout.text, plain.text);
      saysNothing(optout, 'research read');
      assert.equal(hint(optout.body), undefined, 'break-the-glass never applies to research');
    }
  });

  it('the break-the-glass hint goes only to a client registered for it, asking for direct care, about patient data', async () => {
    assert.equal(hint((await hospital.get(`/Patient/${ids.plain}`)).body), 'BTG');
    assert.equal(hint((await hospital.get(`/Patient/${ids.optout}/_history`)).body), 'BTG');
    assert.equal(hint((await hospitalResearch.get(`/Patient/${ids.plain}`)).body), undefined, 'HRESCH: secondary use');
    assert.equal(hint((await research.get(`/Patient/${ids.plain}`)).body), undefined, 'not registered for BTG');
    assert.equal(hint((await hospital.get(`/AuditEvent/${ids.plainEvent}`)).body), undefined, 'BTG does not open AuditEvents');
    assert.equal(hint((await hospital.get(`/Consent/${ids.denyConsent}`)).body), undefined, 'BTG does not open Consents');
    const batch = await hospital.post('/', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Patient/${ids.denied}` } }] });
    assert.equal(hint(batch.body.entry[0].response.outcome), 'BTG');
  });

  it('the audit trail keeps what the client is not told: the reason and the deciding Consents', async () => {
    await research.get(`/Patient/${ids.optout}`, { 'X-Request-Id': 'refusal-optout' });
    await hospital.get(`/AuditEvent/${ids.deniedEvent}`, { 'X-Request-Id': 'refusal-audit' });
    const events = async (rid: string) => (await auditor.get(`/AuditEvent?entity:identifier=${rid}&_count=50`)).body.entry.map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
    const optout = await events('refusal-optout');
    assert.ok(optout.some((e) => /national-opt-out/.test(e.outcomeDesc ?? '') && e.entity?.some((x) => x.what?.reference?.startsWith(`Consent/${ids.optoutConsent}`))), JSON.stringify(optout.map((e) => e.outcomeDesc)));
    const audit = await events('refusal-audit');
    assert.ok(audit.some((e) => /audit-restricted/.test(e.outcomeDesc ?? '')), JSON.stringify(audit.map((e) => e.outcomeDesc)));
  });

  it('$access-decision tells the custodian what the 403 did not', async () => {
    const res = await gp.get(`/Patient/${ids.optout}/$access-decision?client=research&purpose=HRESCH`);
    assert.equal(res.body.parameter.find((p: { name: string }) => p.name === 'reason').valueCode, 'national-opt-out');
  });

  it('a refused write cannot tell a patient that exists from one that does not', async () => {
    const existing = await hospital.post('/Consent', consentFor(ids.plain, { type: 'permit' }));
    const missing = await hospital.post('/Consent', consentFor('no-such-patient', { type: 'permit' }));
    assert.equal(existing.status, 403);
    assert.equal(missing.status, 403);
    assert.equal(existing.text, missing.text);
    assert.equal(category(existing.body), 'not-custodian');
    saysNothing(existing, 'Consent write');
    const update = await hospital.put(`/Patient/${ids.plain}`, { ...patient('Plainfield', '9000000009'), id: ids.plain, active: true });
    assert.equal(update.status, 403);
    saysNothing(update, 'Patient update');
  });

  it('a granular scope the client chose does not tell hidden data that matches it from data that does not', async () => {
    // Found by a second reading (stop 23): `?identifier=<NHS number>` refused a hidden patient as
    // access-policy when the number was theirs and as granular-scope when it was not.
    const NHS_SYSTEM = 'https://fhir.nhs.uk/Id/nhs-number';
    const filtered = (nhs: string) => h.as('hospital', { scope: `system/Patient.rs?identifier=${NHS_SYSTEM}|${nhs}` });
    const theirs = await filtered('9000000009');
    const notTheirs = await filtered('9000000017');
    const a = await theirs.get(`/Patient/${ids.plain}`);
    const b = await notTheirs.get(`/Patient/${ids.plain}`);
    assert.deepEqual([a.status, b.status], [403, 403]);
    assert.deepEqual([category(a.body), hint(a.body)], [category(b.body), hint(b.body)], `${a.text}\n${b.text}`);
    assert.equal(category(b.body), 'access-policy');
    saysNothing(b, 'granular scope, hidden patient');
    // Where the Consent lets the client see the data, the filter's refusal is the answer: it tells nothing hidden.
    const visible = (await gp.post('/Patient', patient('Visibleton', '9000000025'))).body.id as string;
    assert.equal((await gp.post('/Consent', consentFor(visible, { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: org('HOSP1') }] }))).status, 201);
    assert.equal((await (await filtered('9000000025')).get(`/Patient/${visible}`)).status, 200);
    const outside = await notTheirs.get(`/Patient/${visible}`);
    assert.equal(outside.status, 403);
    assert.equal(category(outside.body), 'granular-scope');
  });

  it('every public category is documented in the README', () => {
    const readme = fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('**What a refused client sees.**'), readme.indexOf('### Explaining decisions'));
    for (const code of PUBLIC_REFUSALS) assert.ok(section.includes(`\`${code}\``), code);
  });
});
