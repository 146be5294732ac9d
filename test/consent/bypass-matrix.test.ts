import assert from 'node:assert/strict';
import type { Resource } from 'fhir/r4';
import type { Api, ApiResponse } from '../support/api';
import { repoJson } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * The HTTP bypass matrix: every path that can carry patient data × {permitted, denied,
 * break-the-glass, consent withdrawn a moment ago}. Each cell asserts the status and that
 * nothing of a hidden patient leaks — not its id, name or NHS number, in any body (403s
 * included) or header — and that counts and page boundaries are those of the visible data only.
 *
 * The asker is a hospital (HOSP1) that is not the custodian of any of the patients (the GP
 * practice GP1 is). In each scenario one patient is the *target* the cell asks about, and the
 * *secrets* are the patients the hospital may not see in that scenario.
 */

const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
const BASE = 'http://custodian.test/fhir';
const org = (code: string) => ({ identifier: { system: ODS, value: code } });
const v3 = (code: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code });

type PersonKey = 'open' | 'hidden' | 'btgRefused' | 'withdrawn';
interface Person {
  id: string;
  readonly family: string;
  readonly nhs: string;
}
const PEOPLE: Record<PersonKey, Person> = {
  // A Consent permits direct care by anyone (it names no one, so the hospital cannot read it).
  open: { id: '', family: 'Opensworth', nhs: '9434765900' },
  // No Consent permits the hospital; a national data opt-out besides. Break-the-glass opens it.
  hidden: { id: '', family: 'Hiddenham', nhs: '9434765927' },
  // A Consent refuses break-the-glass to everyone: hidden in every scenario.
  btgRefused: { id: '', family: 'Glassbury', nhs: '9434765935' },
  // A Consent permitting direct care by anyone, withdrawn (status inactive) just before each
  // cell of the "withdrawn" scenario, after the hospital has seen the patient once.
  withdrawn: { id: '', family: 'Lately', nhs: '9434765943' },
};

type ScenarioName = 'permitted' | 'denied' | 'break-the-glass' | 'withdrawn';
interface Scenario {
  readonly name: ScenarioName;
  /** How the cell titles describe it. */
  readonly says: string;
  readonly purpose: 'TREAT' | 'BTG';
  readonly target: PersonKey;
  /** May the asker see the target in this scenario? */
  readonly visible: boolean;
  readonly secrets: readonly PersonKey[];
}
const SCENARIOS: readonly Scenario[] = [
  { name: 'permitted', says: 'a Consent permits the hospital', purpose: 'TREAT', target: 'open', visible: true, secrets: ['hidden', 'btgRefused', 'withdrawn'] },
  { name: 'denied', says: 'nothing permits the hospital', purpose: 'TREAT', target: 'hidden', visible: false, secrets: ['hidden', 'btgRefused', 'withdrawn'] },
  { name: 'break-the-glass', says: 'the hospital breaks the glass', purpose: 'BTG', target: 'hidden', visible: true, secrets: ['btgRefused'] },
  { name: 'withdrawn', says: 'the permitting Consent was withdrawn a moment ago', purpose: 'TREAT', target: 'withdrawn', visible: false, secrets: ['hidden', 'btgRefused', 'withdrawn'] },
];

/** What a cell gets to work with. */
interface Cell {
  readonly api: Api;
  readonly scenario: Scenario;
  readonly target: Person;
  /** The target's current version, as its custodian sees it, before the cell ran. */
  readonly targetVersion: string;
  /** `_summary=count` as the asker saw it a moment before the Consent was withdrawn (withdrawn scenario only). */
  readonly countBeforeWithdrawal?: number;
  /** Checks that nothing of the scenario's secrets is in a response; `echo`: text the asker itself sent, allowed in links and error locators. */
  scan(res: ApiResponse, where: string, echo?: readonly string[]): void;
}

interface Path {
  /** The sentence the cell titles start with. */
  readonly does: string;
  /** What it gets when the target is visible, and when it is not (the rest of the title). */
  readonly gets: readonly [visible: string, hidden: string];
  readonly run: (cell: Cell) => Promise<void>;
}

describe('Consent: the HTTP bypass matrix (paths × permitted, denied, break-the-glass, withdrawn)', () => {
  let h: Harness;
  let gp: Api;
  const apis: Partial<Record<'TREAT' | 'BTG', Api>> = {};
  let withdrawnConsent: Resource & { id: string };

  before(async () => {
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        // No AuditEvent scope: system history covers Patients and Consents.
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.cruds', 'system/Consent.rs'], purposes: ['TREAT', 'ETREAT', 'BTG'] },
      ],
    });
    gp = await h.as('gp');
    apis.TREAT = await h.as('hospital');
    apis.BTG = await h.as('hospital', { purpose: 'BTG' });
    for (const p of Object.values(PEOPLE)) {
      const res = await gp.post('/Patient', { resourceType: 'Patient', identifier: [{ system: NHS, value: p.nhs }], name: [{ family: p.family, given: ['Sam'] }], managingOrganization: org('GP1') });
      assert.equal(res.status, 201, res.text);
      p.id = res.body.id;
      // A second version, so vread and history have something to page through.
      assert.equal((await gp.put(`/Patient/${p.id}`, { ...res.body, gender: 'unknown' })).status, 200);
    }
    const consent = (patientId: string, provision: Record<string, unknown>, status = 'active') => ({
      resourceType: 'Consent',
      status,
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { reference: `Patient/${patientId}` },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision,
    });
    assert.equal((await gp.post('/Consent', consent(PEOPLE.open.id, { type: 'permit', purpose: [v3('TREAT')] }))).status, 201);
    const optOut: Record<string, unknown> = { ...repoJson<Record<string, unknown>>('profiles', 'examples', 'Consent-example-national-data-opt-out.json'), patient: { reference: `Patient/${PEOPLE.hidden.id}` }, organization: [org('GP1')] };
    delete optOut.id;
    assert.equal((await gp.post('/Consent', optOut)).status, 201);
    assert.equal((await gp.post('/Consent', consent(PEOPLE.btgRefused.id, { type: 'deny', purpose: [v3('BTG')] }))).status, 201);
    const created = await gp.post('/Consent', consent(PEOPLE.withdrawn.id, { type: 'permit', purpose: [v3('TREAT')] }, 'inactive'));
    assert.equal(created.status, 201);
    withdrawnConsent = created.body;
  });
  after(() => h.close());

  /** Sets the withdrawn patient's Consent's status, as its custodian. */
  async function consentStatus(status: 'active' | 'inactive'): Promise<void> {
    const current = (await gp.get(`/Consent/${withdrawnConsent.id}`)).body;
    assert.equal((await gp.put(`/Consent/${withdrawnConsent.id}`, { ...current, status })).status, 200);
  }

  /** Every string in a response — body and headers — with link URLs decoded and the asker's own echoed text removed from links and locators. */
  function textOf(res: ApiResponse, echo: readonly string[]): string {
    const strip = (s: string) => echo.reduce((t, e) => t.split(e).join('[echo]'), s);
    const body = res.body === undefined ? res.text : JSON.stringify(res.body, function (this: Record<string, unknown>, key, value) {
      if (key === 'url' && typeof value === 'string' && 'relation' in this) return strip(decodeURIComponent(value));
      if (key === 'diagnostics' && typeof value === 'string') return strip(value);
      return value;
    });
    return `${body}\n${Object.entries(res.headers).map(([k, v]) => `${k}: ${v}`).join('\n')}`;
  }

  function cellFor(scenario: Scenario, targetVersion: string, countBeforeWithdrawal?: number): Cell {
    const target = PEOPLE[scenario.target];
    return {
      api: apis[scenario.purpose]!,
      scenario,
      target,
      targetVersion,
      countBeforeWithdrawal,
      scan(res, where, echo = []) {
        const text = textOf(res, echo);
        for (const key of scenario.secrets) {
          const p = PEOPLE[key];
          for (const [what, value] of [['id', p.id], ['name', p.family], ['NHS number', p.nhs]] as const) {
            assert.ok(!text.includes(value), `${where}: the ${what} of the ${key} patient leaked (${res.status}): ${text.slice(0, 600)}`);
          }
        }
      },
    };
  }

  /** Follows `next` links from `first`, checking every page: full (except the last), never empty, nothing hidden. */
  async function walk(cell: Cell, first: string, count: number, echo: readonly string[]): Promise<{ ids: string[]; pages: number; total?: number }> {
    const ids: string[] = [];
    let res = await cell.api.get(first);
    let pages = 0;
    const total = res.body.total as number | undefined;
    for (;;) {
      assert.equal(res.status, 200, res.text);
      cell.scan(res, `page ${pages + 1} of ${first}`, echo);
      const entries = (res.body.entry ?? []) as { resource?: { resourceType: string; id: string }; request?: { url: string } }[];
      const page = entries.filter((e) => e.resource?.resourceType !== 'OperationOutcome');
      const next = (res.body.link as { relation: string; url: string }[]).find((l) => l.relation === 'next');
      pages++;
      if (next) assert.equal(page.length, count, `page ${pages} of ${first} is not full though another follows`);
      if (pages > 1 || next) assert.ok(page.length > 0, `page ${pages} of ${first} is empty`);
      ids.push(...page.map((e) => e.resource?.id ?? e.request!.url.split('/')[1]));
      if (!next) break;
      assert.ok(next.url.startsWith(BASE));
      res = await cell.api.get(next.url.slice(BASE.length));
    }
    return { ids, pages, total };
  }

  const byIdentifier = (p: Person) => `identifier=${NHS}|${p.nhs}`;
  const newcomer = (family: string) => ({ resourceType: 'Patient', name: [{ family }], managingOrganization: org('GP1') });
  const status = (cell: Cell, visible: number, hidden: number) => (cell.scenario.visible ? visible : hidden);

  /** The paths: one row each; every row runs in every scenario. */
  const PATHS: readonly Path[] = [
    {
      does: 'a read',
      gets: ['200 and the patient', '403 and nothing of the patient'],
      async run(cell) {
        const res = await cell.api.get(`/Patient/${cell.target.id}`);
        cell.scan(res, 'read');
        assert.equal(res.status, status(cell, 200, 403), res.text);
        if (cell.scenario.visible) assert.equal(res.body.id, cell.target.id);
      },
    },
    {
      does: 'a vread',
      gets: ['200 and that version', '403 and nothing of the patient'],
      async run(cell) {
        const res = await cell.api.get(`/Patient/${cell.target.id}/_history/1`);
        cell.scan(res, 'vread');
        assert.equal(res.status, status(cell, 200, 403), res.text);
      },
    },
    {
      does: 'an instance history',
      gets: ['200 and every version', '403 and nothing of the patient'],
      async run(cell) {
        const res = await cell.api.get(`/Patient/${cell.target.id}/_history`);
        cell.scan(res, 'instance history');
        assert.equal(res.status, status(cell, 200, 403), res.text);
        if (cell.scenario.visible) assert.ok(res.body.entry.length >= 2);
      },
    },
    {
      does: 'a type history read page by page',
      gets: ['full pages that include the patient', 'full pages without the patient, and no empty page'],
      async run(cell) {
        const { ids } = await walk(cell, '/Patient/_history?_count=3', 3, []);
        assert.equal(ids.includes(cell.target.id), cell.scenario.visible);
      },
    },
    {
      does: 'a system history read page by page',
      gets: ['full pages that include the patient', 'full pages without the patient, and no empty page'],
      async run(cell) {
        const { ids } = await walk(cell, '/_history?_count=3', 3, []);
        assert.equal(ids.includes(cell.target.id), cell.scenario.visible);
      },
    },
    {
      does: 'a search by the target\'s NHS number',
      gets: ['the patient, total 1', 'no match, total 0'],
      async run(cell) {
        const res = await cell.api.get(`/Patient?${byIdentifier(cell.target)}&_total=accurate`);
        cell.scan(res, 'search', [cell.target.nhs]);
        assert.equal(res.status, 200);
        assert.equal(res.body.total, status(cell, 1, 0));
        assert.deepEqual((res.body.entry ?? []).filter((e: { search: { mode: string } }) => e.search.mode === 'match').map((e: { resource: { id: string } }) => e.resource.id), cell.scenario.visible ? [cell.target.id] : []);
      },
    },
    {
      does: 'a _summary=count',
      gets: ['the count of what the asker can page through', 'the count of what the asker can page through (one less once a Consent is withdrawn)'],
      async run(cell) {
        const res = await cell.api.get('/Patient?_summary=count');
        cell.scan(res, '_summary=count');
        assert.equal(res.status, 200);
        const { ids } = await walk(cell, '/Patient?_count=5', 5, []);
        assert.equal(res.body.total, ids.length, 'the count is that of what the asker can walk to');
        assert.equal(ids.includes(cell.target.id), cell.scenario.visible);
        if (cell.countBeforeWithdrawal !== undefined) assert.equal(res.body.total, cell.countBeforeWithdrawal - 1, 'withdrawing one Consent hides exactly one patient');
      },
    },
    {
      does: 'a search with _total=accurate',
      gets: ['a total equal to what the asker can page through', 'a total equal to what the asker can page through'],
      async run(cell) {
        const { ids, total } = await walk(cell, '/Patient?_total=accurate&_count=2', 2, []);
        assert.equal(total, ids.length, 'the total is that of what the asker can walk to');
        assert.equal(new Set(ids).size, ids.length);
      },
    },
    {
      does: 'paging a search one result at a time',
      gets: ['one full page per visible patient', 'one full page per visible patient, none for hidden ones'],
      async run(cell) {
        const { ids, pages } = await walk(cell, `/Patient?_count=1&family=${PEOPLE.open.family},${PEOPLE.hidden.family},${PEOPLE.btgRefused.family},${PEOPLE.withdrawn.family}`, 1, [PEOPLE.open.family, PEOPLE.hidden.family, PEOPLE.btgRefused.family, PEOPLE.withdrawn.family]);
        assert.equal(pages, ids.length, 'one full page per visible patient, and no page more');
        const visible = (Object.keys(PEOPLE) as PersonKey[]).filter((k) => !cell.scenario.secrets.includes(k)).map((k) => PEOPLE[k].id);
        assert.deepEqual([...ids].sort(), [...visible].sort());
      },
    },
    {
      does: 'a batch of GET entries (a read and a search)',
      gets: ['a 200 read entry and a search total of 1', 'a 403 read entry and a search total of 0'],
      async run(cell) {
        const res = await cell.api.post('/', {
          resourceType: 'Bundle',
          type: 'batch',
          entry: [{ request: { method: 'GET', url: `Patient/${cell.target.id}` } }, { request: { method: 'GET', url: `Patient?${byIdentifier(cell.target)}&_total=accurate` } }],
        });
        cell.scan(res, 'batch', [cell.target.nhs]);
        assert.equal(res.status, 200);
        assert.equal(res.body.entry[0].response.status.slice(0, 3), String(status(cell, 200, 403)));
        assert.equal(res.body.entry[1].resource.total, status(cell, 1, 0));
      },
    },
    {
      does: 'a transaction GET entry',
      gets: ['200 and the patient', '403 for the whole transaction'],
      async run(cell) {
        const res = await cell.api.post('/', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'GET', url: `Patient/${cell.target.id}` } }] });
        // A failed transaction's outcome locates the entry by quoting the asker's own request line.
        cell.scan(res, 'transaction', [`GET Patient/${cell.target.id}`]);
        assert.equal(res.status, status(cell, 200, 403), res.text);
        if (cell.scenario.visible) assert.equal(res.body.entry[0].resource.id, cell.target.id);
      },
    },
    {
      does: 'a conditional create (If-None-Exist on the target\'s NHS number)',
      gets: ['200 and the existing patient', '201 and a new patient (the hidden match does not count)'],
      async run(cell) {
        const res = await cell.api.request('post', '/Patient', { body: newcomer('Newcomer'), headers: { 'If-None-Exist': byIdentifier(cell.target), Prefer: 'return=representation' } });
        cell.scan(res, 'conditional create');
        // A visible match is returned as it is; a hidden one does not count, so a new Patient is made.
        assert.equal(res.status, status(cell, 200, 201), res.text);
        if (cell.scenario.visible) assert.equal(res.body.id, cell.target.id);
        else assert.notEqual(res.body.id, cell.target.id);
      },
    },
    {
      does: 'a conditional update (on the target\'s NHS number)',
      gets: ['403 (not its custodian)', '201 and a new patient (the hidden one untouched)'],
      async run(cell) {
        const res = await cell.api.request('put', `/Patient?${byIdentifier(cell.target)}`, { body: newcomer('Overwriter'), headers: { Prefer: 'return=representation' } });
        cell.scan(res, 'conditional update', [cell.target.nhs]);
        // A visible match belongs to another custodian: refused. A hidden one does not match: a new Patient.
        assert.equal(res.status, status(cell, 403, 201), res.text);
        if (!cell.scenario.visible) assert.notEqual(res.body.id, cell.target.id);
      },
    },
    {
      does: 'a conditional delete (on the target\'s NHS number)',
      gets: ['403 (not its custodian)', '200 and nothing deleted'],
      async run(cell) {
        const res = await cell.api.delete(`/Patient?${byIdentifier(cell.target)}`);
        cell.scan(res, 'conditional delete', [cell.target.nhs]);
        assert.equal(res.status, status(cell, 403, 200), res.text);
        if (!cell.scenario.visible) assert.match(res.body.issue[0].diagnostics, /nothing was deleted/);
      },
    },
    {
      does: '$access-decision on the target',
      gets: ['403 (for the custodian, auditors and the patient only)', '403 (for the custodian, auditors and the patient only)'],
      async run(cell) {
        const res = await cell.api.get(`/Patient/${cell.target.id}/$access-decision?client=hospital&purpose=TREAT`);
        cell.scan(res, '$access-decision');
        assert.equal(res.status, 403, 'only for the custodian, auditors and the patient');
      },
    },
    {
      does: '$sharing-summary of the target',
      gets: ['403 (for the custodian, auditors and the patient only)', '403 (for the custodian, auditors and the patient only)'],
      async run(cell) {
        const res = await cell.api.get(`/Patient/${cell.target.id}/$sharing-summary`);
        cell.scan(res, '$sharing-summary');
        assert.equal(res.status, 403);
      },
    },
    {
      does: '$access-report of the target',
      gets: ['403 (for the custodian, auditors and the patient only)', '403 (for the custodian, auditors and the patient only)'],
      async run(cell) {
        const res = await cell.api.get(`/Patient/${cell.target.id}/$access-report`);
        cell.scan(res, '$access-report');
        assert.equal(res.status, 403);
      },
    },
    {
      does: '$validate with mode=update of the target',
      gets: ['200 (it answers like a read)', '403 (it answers like a read)'],
      async run(cell) {
        const res = await cell.api.post(`/Patient/${cell.target.id}/$validate?mode=update`, { resourceType: 'Patient', id: cell.target.id, name: [{ family: 'Validator' }] });
        cell.scan(res, '$validate');
        // It answers like a read; its echo of the body's own id is not a leak, so only 403s are checked for the id.
        assert.equal(res.status, status(cell, 200, 403), res.text);
      },
    },
    // The search features that reach across resources. Here the hospital can see no Consent
    // (none names it), so a chain or _has through Consents matches nothing and a _revinclude
    // includes nothing, whatever the scenario; test/search/security.test.ts covers Consents the
    // asker may see about patients it may not.
    {
      does: 'a sorted search read page by page',
      gets: ['full pages in order that include the patient', 'full pages in order without the patient, and no empty page'],
      async run(cell) {
        const { ids } = await walk(cell, '/Patient?_sort=-family&_count=1', 1, []);
        assert.equal(ids.includes(cell.target.id), cell.scenario.visible);
        assert.equal(new Set(ids).size, ids.length);
      },
    },
    {
      does: 'a search with _revinclude=Consent:patient and _include=Patient:link',
      gets: ['the patient and no Consent it may not see', 'nothing'],
      async run(cell) {
        const res = await cell.api.get(`/Patient?_id=${cell.target.id}&_revinclude=Consent:patient&_include=Patient:link`);
        cell.scan(res, '_revinclude', [cell.target.id]);
        assert.equal(res.status, 200);
        const entries = (res.body.entry ?? []) as { search: { mode: string }; resource: { id: string } }[];
        assert.deepEqual(entries.filter((e) => e.search.mode === 'match').map((e) => e.resource.id), cell.scenario.visible ? [cell.target.id] : []);
        assert.deepEqual(entries.filter((e) => e.search.mode === 'include'), []);
      },
    },
    {
      does: 'a search with _revinclude=* (every type that can point at the patient, AuditEvents among them, which it may not search)',
      gets: ['the patient, and nothing pointing at it that it may not see', 'nothing'],
      async run(cell) {
        const res = await cell.api.get(`/Patient?_id=${cell.target.id}&_revinclude=*`);
        cell.scan(res, '_revinclude=*', [cell.target.id]);
        assert.equal(res.status, 200, res.text);
        const entries = (res.body.entry ?? []) as { search: { mode: string }; resource: { id: string } }[];
        assert.deepEqual(entries.filter((e) => e.search.mode === 'match').map((e) => e.resource.id), cell.scenario.visible ? [cell.target.id] : []);
        assert.deepEqual(entries.filter((e) => e.search.mode === 'include'), []);
      },
    },
    {
      does: 'a chained search (Consent?patient.identifier=<the target\'s NHS number>)',
      gets: ['no Consent it may not see, total 0', 'no match, total 0'],
      async run(cell) {
        const res = await cell.api.get(`/Consent?patient.identifier=${NHS}|${cell.target.nhs}&_total=accurate&_include=Consent:patient`);
        cell.scan(res, 'chain', [cell.target.nhs]);
        assert.equal(res.status, 200);
        assert.equal(res.body.total, 0);
      },
    },
    {
      does: 'a reverse-chained search (Patient?_has:Consent:patient:status=active)',
      gets: ['no match through a Consent it may not see', 'no match'],
      async run(cell) {
        const res = await cell.api.get('/Patient?_has:Consent:patient:status=active&_total=accurate');
        cell.scan(res, '_has');
        assert.equal(res.status, 200);
        assert.equal(res.body.total, 0);
        assert.equal((await cell.api.get('/Patient?_has:Consent:patient:status=active&_summary=count')).body.total, 0);
      },
    },
  ];

  for (const scenario of SCENARIOS) {
    describe(`when ${scenario.says} (${scenario.name})`, () => {
      let targetVersion: string;
      let countBeforeWithdrawal: number | undefined;
      beforeEach(async () => {
        const target = PEOPLE[scenario.target];
        if (scenario.name === 'withdrawn') {
          // Permitted, seen once (so every cache holds the permit), then withdrawn.
          await consentStatus('active');
          assert.equal((await apis.TREAT!.get(`/Patient/${target.id}`)).status, 200);
          countBeforeWithdrawal = (await apis.TREAT!.get('/Patient?_summary=count')).body.total;
          await consentStatus('inactive');
        }
        targetVersion = (await gp.get(`/Patient/${target.id}`)).body.meta.versionId;
      });
      afterEach(async () => {
        // Nothing any cell did changed the target.
        const after = await gp.get(`/Patient/${PEOPLE[scenario.target].id}`);
        assert.equal(after.status, 200);
        assert.equal(after.body.meta.versionId, targetVersion);
      });

      for (const path of PATHS) {
        it(`${path.does} gets ${path.gets[scenario.visible ? 0 : 1]}, and nothing of a hidden patient`, async () => {
          await path.run(cellFor(scenario, targetVersion, countBeforeWithdrawal));
        });
      }
    });
  }
});
