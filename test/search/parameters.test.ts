import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Resource } from 'fhir/r4';
import { openAccessPolicy } from '../../server/gate/policy';
import { examples, SHARED, storeSpecExamples } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * Every search parameter type and modifier, against the spec's own examples and the Synthea
 * patients, with the expected matches worked out by hand from the example files. The consent
 * layer is set aside (the examples name custodians other than the test client): this is the
 * search engine's correctness; test/search/security.test.ts covers who sees what.
 */
type Case = [query: string, expected: string[]];

const PATIENT: Case[] = [
  // string: starts-with, case- and accent-insensitive; :exact; :contains
  ['family=Donald', ['pat1', 'pat2']],
  ['family=don', ['pat1', 'pat2']],
  ['family=DONALD', ['pat1', 'pat2']],
  ['family:exact=Donald', ['pat1', 'pat2']],
  ['family:exact=donald', []],
  ['family:exact=Don', []],
  ['family:contains=ryw', ['genetics-example1', 'mom']],
  ['family:contains=OWEL', ['pat3', 'pat4']],
  ['given=Pet', ['example']],
  ['name=Jim', ['example']],
  ['name=chalm', ['example']],
  ['name=Leia', ['infant-mom']],
  ['name=Organa', ['infant-mom']],
  ['family=Solo', ['infant-mom', 'infant-twin-1', 'infant-twin-2']],
  ['family=Solo,Doe', ['infant-mom', 'infant-twin-1', 'infant-twin-2', 'xds']],
  ['family=Solo&given=Jacen', ['infant-twin-2']],
  ['name:contains=ann', []],
  ['phonetic=Donalt', ['pat1', 'pat2']],
  ['address-city=Amsterdam', ['f001', 'f201']],
  ['address-city=amst', ['f001', 'f201']],
  ['address=PleasantVille', ['example']],
  ['address=metro', ['xds']],
  ['address-postalcode=3999', ['example']],
  ['address-country=NLD', ['f001', 'f201']],
  ['address-state=Il', ['xds']],
  ['address-use=home', ['ch-example', 'example', 'f001', 'f201', 'genetics-example1', 'mom']],
  // token: code, system|code, |code, system|, :not, :missing, :text, :of-type
  ['gender=male', ['ch-example', 'dicom', 'example', 'f001', 'f201', 'glossy', 'infant-fetal', 'infant-twin-2', 'newborn', 'pat1', 'pat3', 'xcda', 'xds']],
  ['gender=http://hl7.org/fhir/administrative-gender|other', ['pat2']],
  ['gender=http://example.org/not-the-system|other', []],
  ['gender:not=male', ['animal', 'genetics-example1', 'ihe-pcd', 'infant-mom', 'infant-twin-1', 'mom', 'pat2', 'pat4', 'proband']],
  ['gender:missing=true', ['ihe-pcd']],
  ['gender=female,other&birthdate=lt1980', ['genetics-example1', 'mom', 'proband']],
  ['identifier=urn:oid:0.1.2.3.4.5.6.7|654321', ['pat1']],
  ['identifier=12345', ['example', 'xcda']],
  ['identifier=urn:oid:0.1.2.3.4.5.6.7|', ['pat1', 'pat2', 'pat3', 'pat4']],
  ['identifier=|AB60001', ['ihe-pcd']],
  ['identifier=urn:oid:1.2.36.146.595.217.0.1|12345', ['example']],
  ['identifier:not=urn:oid:0.1.2.3.4.5.6.7|654321&family=Donald', ['pat2']],
  ['active=true&gender=female', ['animal', 'genetics-example1', 'mom', 'pat4', 'proband']],
  ['active:missing=true', ['infant-fetal', 'infant-mom', 'infant-twin-1', 'infant-twin-2', 'newborn']],
  ['deceased=true', ['pat3', 'pat4']],
  ['phone=(03) 5555 6473', ['example']],
  ['telecom=phone|0648352638', ['f001']],
  ['email=p.heuvel@gmail.com', ['f001']],
  ['language=nl', ['f001']],
  ['language=urn:ietf:bcp:47|nl-NL', ['f201']],
  // date: partial dates are ranges; every prefix
  ['birthdate=1974-12-25', ['ch-example', 'example']],
  ['birthdate=1974', ['ch-example', 'example']],
  ['birthdate=1974-12', ['ch-example', 'example']],
  ['birthdate=eq1974-12-25', ['ch-example', 'example']],
  ['birthdate=lt1940', ['glossy', 'xcda']],
  ['birthdate=le1932-09-24', ['glossy', 'xcda']],
  ['birthdate=lt1932-09-24', []],
  ['birthdate=ge2017', ['infant-twin-1', 'infant-twin-2', 'newborn']],
  ['birthdate=gt2017-05-15', ['newborn']],
  ['birthdate=2017-05', ['infant-twin-1', 'infant-twin-2']],
  ['birthdate=sa2017-05-15', ['newborn']],
  ['birthdate=eb1940', ['glossy', 'xcda']],
  ['birthdate=ne1974-12-25&birthdate=gt1970&birthdate=lt1980', ['genetics-example1', 'mom']],
  ['birthdate=ge1982&birthdate=le1982', ['pat3', 'pat4']],
  ['birthdate=1982-01-23T10:00:00Z', []],
  ['death-date=2015-02-14', ['pat3']],
  ['death-date=2015-02-14T03:42:00Z', ['pat3']],
  ['death-date=ge2015-02-15', []],
  // reference: Type/id, id, absolute URL, :Type, :identifier, :missing
  ['link=Patient/pat2', ['pat1']],
  ['link=pat1', ['pat2']],
  ['link:Patient=pat1', ['pat2']],
  ['link=http://custodian.test/fhir/Patient/pat2', ['pat1']],
  ['link=RelatedPerson/newborn-mom', ['mom']],
  ['link:missing=false', ['mom', 'pat1', 'pat2']],
  ['organization=Organization/1', ['ch-example', 'dicom', 'example', 'pat1', 'pat2', 'pat3', 'pat4']],
  ['organization=f201', ['f201']],
  ['general-practitioner=Practitioner/example', ['glossy']],
  ['general-practitioner:Practitioner=21B', ['infant-mom']],
  // common parameters
  ['_id=pat1,pat2,nope', ['pat1', 'pat2']],
  ['_id:not=pat1&family=Donald', ['pat2']],
];

const CONSENT: Case[] = [
  ['status=active&patient=Patient/example', ['consent-example-pkb']],
  ['patient=f001&category=EMRGONLY', ['consent-example-Emergency']],
  ['patient:Patient=xcda', ['consent-example-smartonfhir']],
  ['patient:missing=true', []],
  ['category=http://loinc.org|59284-0&patient=f001', ['consent-example-Out', 'consent-example-basic', 'consent-example-notAuthor', 'consent-example-notOrg', 'consent-example-notThem', 'consent-example-notThis', 'consent-example-notTime']],
  ['category:not=59284-0', ['consent-example-Emergency', 'consent-example-grantor', 'consent-example-signature']],
  ['organization=Organization/f001&date=ge2016-06', ['consent-example-pkb', 'consent-example-smartonfhir']],
  ['date=2015-11-18&action=access', ['consent-example-grantor', 'consent-example-notOrg', 'consent-example-notThem']],
  ['date=ge2016', ['consent-example-basic', 'consent-example-pkb', 'consent-example-signature', 'consent-example-smartonfhir']],
  ['date=2016-05', ['consent-example-basic', 'consent-example-signature']],
  ['date=2016-05-26T04:41:10Z', ['consent-example-signature']],
  ['period=ge2015-01-15', ['consent-example-basic', 'consent-example-notTime', 'consent-example-signature', 'consent-example-smartonfhir']],
  ['period=sa2015-12-31', ['consent-example-smartonfhir']],
  ['period=eb2015-06-01', ['consent-example-notTime']],
  ['period=2015', ['consent-example-notTime']],
  ['actor=Organization/f001&category=59284-0', ['consent-example-Out', 'consent-example-notAuthor', 'consent-example-notOrg', 'consent-example-pkb']],
  ['actor=Patient/example', ['consent-example-grantor']],
  ['actor:Practitioner=f204', ['consent-example-notThem']],
  ['consentor=RelatedPerson/peter', ['consent-example-smartonfhir']],
  ['purpose=ETREAT', ['consent-example-Emergency']],
  ['security-label=N', ['consent-example-pkb']],
  ['data=Task/example3', ['consent-example-notThis']],
  ['identifier=urn:oid:2.16.840.1.113883.3.72.5.9.1|494e0c7a-a69e-4fb4-9d02-6aae747790d7', ['consent-example-signature']],
  ['scope=patient-privacy&patient=Patient/72', ['consent-example-signature']],
];

const AUDIT_EVENT: Case[] = [
  ['type=rest', ['example-error', 'example-rest', 'example-search']],
  // :text matches a word prefix of the display or text (http://hl7.org/fhir/R4/search.html#text)
  ['type:text=restful', ['example-error', 'example-rest', 'example-search']],
  ['type:text=operation', ['example-error', 'example-rest', 'example-search']],
  ['subtype:text=pix qu', ['example-pixQuery']],
  ['subtype:text=ery', []],
  ['type=http://terminology.hl7.org/CodeSystem/audit-event-type|rest&subtype=vread', ['example-rest']],
  ['action=E', ['example', 'example-login', 'example-logout', 'example-pixQuery', 'example-search']],
  ['action=C,R&outcome=0', ['example-disclosure', 'example-media', 'example-rest']],
  ['outcome=8', ['example-error']],
  ['date=2013-06-20', ['example-login', 'example-logout', 'example-rest']],
  ['date=ge2015', ['example-error', 'example-media', 'example-pixQuery', 'example-search']],
  ['date=lt2013', ['example']],
  ['date=2012-10-25T11:04:27Z', ['example']],
  ['site=Cloud&action=E', ['example-login', 'example-logout', 'example-search']],
  ['patient=example', ['example-disclosure', 'example-rest']],
  ['patient=Patient/example&subtype=Disclosure', ['example-disclosure']],
  ['entity=Patient/example', ['example-disclosure', 'example-rest']],
  ['entity=DocumentManifest/example', ['example-media']],
  ['entity:identifier=What.id', ['example-disclosure']],
  ['agent=Practitioner/example', ['example-disclosure']],
  ['agent:identifier=601847123', []],
  ['altid=notMe', ['example-disclosure']],
  ['agent-name=grahame', ['example-error', 'example-login', 'example-logout', 'example-media', 'example-pixQuery', 'example-rest', 'example-search']],
  ['address=127.0.0.1', ['example', 'example-login', 'example-logout']],
  ['policy=http://consent.com/yes', ['example-disclosure']],
  ['entity-name=Namne', ['example-disclosure']],
  ['entity-type=4', ['example']],
  ['entity-role=24', ['example-pixQuery', 'example-search']],
  ['entity-type:missing=true&action=E', ['example-login', 'example-logout']],
];

const EXAMPLE_EVENTS = 'date=lt2020';

/** Parameters no spec example carries a value for: their cases are in test/search/features.test.ts. */
const COVERED_ELSEWHERE = ['AuditEvent.agent-role', 'AuditEvent.source', 'Consent.source-reference'];

describe('Search: every parameter type and modifier against the spec examples', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policy: openAccessPolicy });
    await storeSpecExamples(h.api);
  });
  after(() => h.close());

  /** AuditEvents are stored under server ids; their example ids live on in `entity`/`site`…, so match them by content. */
  const auditIds = new Map<string, string>();
  const idOf = (r: Resource) => (r.resourceType === 'AuditEvent' ? auditIds.get(r.id!) : r.id);
  before(async () => {
    const all = await h.api.get(`/AuditEvent?${EXAMPLE_EVENTS}&_count=100`);
    const byRecorded = new Map(examples('r4/examples/AuditEvent').map(([, r]) => [(r as unknown as { recorded: string }).recorded, r.id!]));
    for (const e of all.body.entry) auditIds.set(e.resource.id, byRecorded.get(e.resource.recorded)!);
    assert.equal(auditIds.size, 9);
  });

  const table: [string, Case[]][] = [
    ['Patient', PATIENT],
    ['Consent', CONSENT],
    ['AuditEvent', AUDIT_EVENT],
  ];
  for (const [type, cases] of table) {
    describe(type, () => {
      for (const [query, expected] of cases) {
        it(`${type}?${query} finds ${expected.length ? expected.join(', ') : 'nothing'}`, async () => {
          // The server's own audit trail is in the same table: the examples are the events recorded before 2020.
          const only = type === 'AuditEvent' ? `&${EXAMPLE_EVENTS}` : '';
          const res = await h.api.get(`/${type}?${query.replace(/ /g, '%20')}${only}&_count=100`, { Prefer: 'handling=strict' });
          assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 400));
          const found = (res.body.entry ?? []).map((e: { resource: Resource }) => idOf(e.resource)).sort();
          assert.deepEqual(found, [...expected].sort());
          assert.equal(res.body.total, expected.length);
        });
      }
    });
  }

  it('every search parameter R4 defines for the three types appears in the table at least once', async () => {
    const cs = (await h.api.get('/metadata')).body;
    const untested: string[] = [];
    for (const [type, cases] of table) {
      const used = new Set(cases.flatMap(([q]) => q.split('&').map((p) => p.split('=')[0].split(':')[0])));
      const common = ['_lastUpdated', '_tag', '_profile', '_security', '_source', '_id'];
      const listed = cs.rest[0].resource.find((r: { type: string }) => r.type === type).searchParam.map((p: { name: string }) => p.name) as string[];
      for (const name of listed) if (!used.has(name) && !common.includes(name)) untested.push(`${type}.${name}`);
    }
    // Parameters whose values no example carries are covered in test/search/features.test.ts.
    assert.deepEqual(untested.sort(), COVERED_ELSEWHERE);
  });
});

describe('Search: the Synthea patients', () => {
  let h: Harness;
  const patients = fs
    .readFileSync(path.join(SHARED, 'synthea', 'sample-bulk-fhir-datasets-10-patients', 'Patient.000.ndjson'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Resource);
  const short = (id: string) => id.slice(0, 8);
  before(async () => {
    h = await startHarness({ policy: openAccessPolicy });
    for (const p of patients) assert.equal((await h.api.put(`/Patient/${p.id}`, p)).status, 201);
  });
  after(() => h.close());

  const cases: Case[] = [
    ['gender=female', ['129c6ac7', '6a4160eb', '79a66c97', '7bc002fa', 'a4a401d1', 'a5cb8ce9', 'bb6a9034', 'ca15b832', 'fb7c882a']],
    ['birthdate=1927-05-21', ['129c6ac7', '79a66c97', 'a5cb8ce9']],
    ['birthdate=ge2000', ['63ee2253', 'bb6a9034', 'fb7c882a']],
    // ap: within 10% of the distance from now (http://hl7.org/fhir/R4/search.html#prefix), here about 6.6 years
    ['birthdate=ap1960-04-13', ['3af3708d', '6a4160eb', '8e1a0a7c']],
    ['birthdate=ap1927-05-21&gender=male', []],
    ['death-date:missing=false', ['129c6ac7', '3af3708d', '79a66c97']],
    ['death-date=1989', ['129c6ac7']],
    ['deceased=true', ['129c6ac7', '3af3708d', '79a66c97']],
    ['address-city=Emporia&given=elisa', ['a5cb8ce9']],
    ['address-state=KS&family=O\'Keefe', ['fb7c882a']],
    ['family=schm', ['63ee2253']],
    ['family=schu', ['a4a401d1']],
    ['name:contains=anne', ['7bc002fa']],
    ['identifier=http://hl7.org/fhir/sid/us-ssn|999-94-5397', ['129c6ac7']],
    ['identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|129c6ac7-8d06-89de-ad63-0204a93e76c3', ['129c6ac7']],
    ['identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|129c6ac7-8d06-89de-ad63-0204a93e76c3', []],
    ['identifier:text=passport&gender=male', ['8e1a0a7c', 'cbc86e51']],
    ['phone=555-810-7203', ['129c6ac7']],
    ['_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient&birthdate=lt1930', ['129c6ac7', '79a66c97', 'a5cb8ce9']],
    ['language=en-US&gender=male&birthdate=gt1990', ['63ee2253', 'cbc86e51']],
  ];
  for (const [query, expected] of cases) {
    it(`Patient?${query} finds ${expected.length ? expected.join(', ') : 'nothing'}`, async () => {
      const res = await h.api.get(`/Patient?${query}&_count=100`, { Prefer: 'handling=strict' });
      assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 400));
      assert.deepEqual((res.body.entry ?? []).map((e: { resource: Resource }) => short(e.resource.id!)).sort(), expected.sort());
    });
  }
});
