import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AuditEvent, Consent, Patient, Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import { SERVER_WRITER } from '../../server/access/context';
import type { DatabaseConfig } from '../../server/config';
import { compileOrder } from '../../server/search/order';
import { parseSearch } from '../../server/search/parse';
import { compileFilter } from '../../server/search/sql';
import { StoreReader } from '../../server/store/read';
import { Store } from '../../server/store/store';
import { fetchToken } from '../token';
import { auditBacklog, backlogIndexed, benchClients, benchDatabase, FLOOR, JOURNAL, ODS, ratio, type Result, run, startCustodian, stop, UNAUDITED, WARMUP } from './lib';

/**
 * The search workload at scale (`BENCH_ONLY=search npm run bench`): seeds Patients, Consents
 * and AuditEvents directly through the store in batches, then measures the searches hospital
 * EHRs, national services and auditors run most, side by side with `GET /Patient/{id}`.
 *
 *   BENCH_SEARCH_PATIENTS  Patients (and Consents) to seed (default 100000); AuditEvents: 10 per Patient
 */
const PATIENTS = Number(process.env.BENCH_SEARCH_PATIENTS ?? 100000);
const EVENTS_PER_PATIENT = 10;
const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
const FAMILIES = ['Smith', 'Jones', 'Taylor', 'Brown', 'Williams', 'Wilson', 'Johnson', 'Davies', 'Robinson', 'Wright', 'Thompson', 'Evans', 'Walker', 'White', 'Roberts', 'Green', 'Hall', 'Wood', 'Jackson', 'Clarke'];
const EVENT_START = Date.UTC(2026, 0, 1);

/** The i-th valid NHS number (Modulus 11), from 900000000x upwards. */
export function nhsNumber(i: number): string {
  for (let n = 900000000 + i * 2; ; n++) {
    const digits = String(n).split('').map(Number);
    const sum = digits.reduce((s, d, k) => s + d * (10 - k), 0);
    const check = 11 - (sum % 11);
    if (check === 10) continue;
    return `${n}${check === 11 ? 0 : check}`;
  }
}

function patientOf(i: number): Patient {
  // Family names: a common stem plus a number, so a 3-letter prefix matches ~1/20 of the patients and the stem+digits far fewer.
  return {
    resourceType: 'Patient',
    id: `p-${i}`,
    identifier: [{ system: NHS, value: nhsNumber(i) }],
    active: true,
    name: [{ use: 'official', family: `${FAMILIES[i % FAMILIES.length]}${Math.floor(i / FAMILIES.length) % 500}`, given: [`Given${i % 211}`] }],
    gender: i % 2 ? 'female' : 'male',
    birthDate: `${1930 + (i % 90)}-${String(1 + (i % 12)).padStart(2, '0')}-${String(1 + (i % 28)).padStart(2, '0')}`,
    address: [{ line: [`${i} High Street`], city: 'Leeds', postalCode: 'LS1 1AA', country: 'GB' }],
    managingOrganization: { identifier: { system: ODS, value: 'BENCH1' } },
  };
}

function consentOf(i: number): Consent {
  return {
    resourceType: 'Consent',
    id: `c-${i}`,
    status: i % 10 === 0 ? 'inactive' : 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/p-${i}` },
    dateTime: '2025-06-01T00:00:00Z',
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision: { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: { identifier: { system: ODS, value: 'HOSP1' } } }], purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }] },
  };
}

/** A BALP-shaped read event about patient `p`, recorded `k` minutes into the year. */
function eventOf(j: number): AuditEvent {
  const p = j % PATIENTS;
  return {
    resourceType: 'AuditEvent',
    id: `e-${j}`,
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'Restful Operation' },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: 'read', display: 'read' }],
    action: 'R',
    recorded: new Date(EVENT_START + Math.floor(j / PATIENTS) * 86400000 * 30 + (p % 1440) * 60000).toISOString(),
    outcome: '0',
    agent: [
      { type: { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110153', display: 'Source Role ID' }] }, who: { identifier: { system: 'urn:bench:client', value: 'hospital' } }, requestor: true, purposeOfUse: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }] }] },
      { type: { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110152', display: 'Destination Role ID' }] }, who: { display: 'Custodian' }, requestor: false },
    ],
    source: { observer: { display: 'Custodian' }, type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }] },
    entity: [
      { what: { reference: `Patient/p-${p}` }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1' }, role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1' } },
    ],
  };
}

export async function seed(database: DatabaseConfig): Promise<void> {
  const store = await Store.open(database, { now: Date.now });
  const writer = { clientId: 'bench', organization: `${ODS}|BENCH1` };
  const load = async (type: ResourceType, total: number, make: (i: number) => Resource) => {
    const started = performance.now();
    // The AuditEvents stand for the server's own trail (BALP events of its reads), so they are
    // written as the server writes its own: an audit source's events are decided otherwise
    // (those naming a patient by identifier, consent/decide.ts).
    const by = type === 'AuditEvent' ? SERVER_WRITER : writer;
    for (let i = 0; i < total; i += 1000) {
      const batch: Resource[] = [];
      for (let j = i; j < Math.min(i + 1000, total); j++) batch.push(make(j));
      await store.transaction((tx) => tx.createMany(type, batch, by));
    }
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`  seeded ${total} ${type}s through the store in ${seconds.toFixed(1)} s (${(total / seconds).toFixed(0)} rows/s, with their history and index rows)\n`);
  };
  await load('Patient', PATIENTS, patientOf);
  await load('Consent', PATIENTS, consentOf);
  await load('AuditEvent', PATIENTS * EVENTS_PER_PATIENT, eventOf);
  await store.analyze();
  await store.close();
}

/** The plan of a search's first page, as the gate would run it (for the closing report). */
async function explain(database: DatabaseConfig, type: ResourceType, query: string): Promise<string[]> {
  const store = await Store.open(database, { now: Date.now });
  try {
    const parsed = parseSearch(type, [...new URLSearchParams(query).entries()], { strict: true, defaultCount: 20, maxCount: 1000, baseUrl: 'http://bench', now: Date.now() });
    const filter = compileFilter(parsed.criteria, Date.now());
    const order = parsed.sort.length ? compileOrder(parsed.sort, [type]) : undefined;
    return await new StoreReader(store.driver).explainPage({ types: [type], filter, order, limit: parsed.count * 2 + 1 }, store.dialect);
  } finally {
    await store.close();
  }
}

interface Walk {
  readonly resources: number;
  readonly seconds: number;
  readonly pages: number;
  readonly p50: number;
  readonly p99: number;
}

/**
 * One national service walking every Consent, 1000 a page, following next links; with
 * `limitSeconds`, only as many pages as it walks in that time (a warm-up).
 */
export async function walkConsents(base: string, headers: Record<string, string>, limitSeconds = Infinity): Promise<Walk> {
  const latencies: number[] = [];
  let resources = 0;
  let url: string | undefined = `${base}/Consent?_count=1000`;
  const t0 = performance.now();
  while (url && performance.now() - t0 < limitSeconds * 1000) {
    const t = performance.now();
    const res = await fetch(url, { headers });
    if (res.status !== 200) throw new Error(`walk: ${res.status} ${await res.text()}`);
    const page = (await res.json()) as { entry?: unknown[]; link?: { relation: string; url: string }[] };
    latencies.push(performance.now() - t);
    resources += page.entry?.length ?? 0;
    url = page.link?.find((l) => l.relation === 'next')?.url;
  }
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { resources, seconds, pages: latencies.length, p50: Math.round(latencies[Math.floor(latencies.length / 2)]), p99: Math.round(latencies[Math.floor(latencies.length * 0.99)]) };
}

/**
 * The walk, measured after WARMUP seconds of walking from the start (as every other workload is
 * measured after WARMUP seconds of its own load): a server fresh from start-up compiles its hot
 * paths during its first pages (measured cold, the first 40-60 pages of a walk were slower).
 */
async function warmWalk(base: string, headers: Record<string, string>): Promise<Walk> {
  if (WARMUP > 0) await walkConsents(base, headers, WARMUP);
  return walkConsents(base, headers);
}

function walkLine(w: Walk): string {
  return `${(w.resources / w.seconds).toFixed(0).padStart(7)} resources/s  (${w.resources} in ${w.pages} pages, ${w.seconds.toFixed(1)} s; page p50 ${w.p50} ms  p99 ${w.p99} ms)`;
}

export async function searchBench(): Promise<boolean> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-bench-search-'));
  const { clientsFile, keys } = await benchClients(dataDir, [
    { clientId: 'bench', ods: 'BENCH1' },
    { clientId: 'national', ods: 'X26', purposes: ['HOPERAT'], roles: ['national-service'] },
  ]);
  const { database, url: databaseUrl } = benchDatabase(dataDir);
  process.stdout.write(`\nSearch at scale: ${PATIENTS} Patients, ${PATIENTS} Consents, ${PATIENTS * EVENTS_PER_PATIENT} AuditEvents, ${database.dialect}\n`);
  await seed(database);

  const server = await startCustodian(dataDir, clientsFile, databaseUrl);
  const results: Record<string, Result> = {};
  let walk: Walk;
  const backlogs: string[] = [];
  let ok = true;
  try {
    const custodian = { authorization: `Bearer ${(await fetchToken({ base: server.base, clientId: 'bench', privateJwk: keys.bench, scope: 'system/*.cruds' })).access_token}` };
    const national = { authorization: `Bearer ${(await fetchToken({ base: server.base, clientId: 'national', privateJwk: keys.national, scope: 'system/*.cruds', purpose: 'HOPERAT' })).access_token}` };
    const randomPatient = () => Math.floor(Math.random() * PATIENTS);
    // AuditEvents are indexed for search in the background, while the machine has CPU to spare;
    // each workload starts with an empty backlog, and what it left behind is reported.
    const each = async (name: string, headers: Record<string, string>, pathOf: () => string) => {
      const result = await run(name, { url: server.base, headers, requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: pathOf() }) }] });
      const left = await auditBacklog(server.base);
      const t = performance.now();
      await backlogIndexed(server.base);
      backlogs.push(`${name}: ${left} events, indexed in ${((performance.now() - t) / 1000).toFixed(1)} s after it`);
      return result;
    };

    results.read = await each('GET /Patient/{id}', custodian, () => `/Patient/p-${randomPatient()}`);
    results.nhs = await each('Patient?identifier=<NHS number>', custodian, () => `/Patient?identifier=${NHS}|${nhsNumber(randomPatient())}`);
    results.family = await each('Patient?family=<stem+n>&birthdate=ge…&birthdate=le…', custodian, () => {
      const i = randomPatient();
      const year = 1930 + (i % 90);
      return `/Patient?family=${FAMILIES[i % FAMILIES.length]}${Math.floor(i / FAMILIES.length) % 500}&birthdate=ge${year - 5}-01-01&birthdate=le${year + 5}-12-31`;
    });
    results.consent = await each('Consent?patient=…&status=active', custodian, () => `/Consent?patient=p-${randomPatient()}&status=active`);
    results.audit = await each('AuditEvent?patient=…&date=ge…&_sort=-date&_count=50', custodian, () => `/AuditEvent?patient=p-${randomPatient()}&date=ge2026-02-01&_sort=-date&_count=50`);

    walk = await warmWalk(server.base, national);
    process.stdout.write(`  walk all Consents, _count=1000 (national service)             ${walkLine(walk)}\n`);
    const left = await auditBacklog(server.base);
    const t = performance.now();
    // Indexed before the other walks, so that their servers do not index it meanwhile.
    await backlogIndexed(server.base);
    backlogs.push(`walk: ${left} events, indexed in ${((performance.now() - t) / 1000).toFixed(1)} s after it`);
    if (walk.resources !== PATIENTS) {
      process.stdout.write(`  the walk saw ${walk.resources} Consents, not ${PATIENTS}\n`);
      ok = false;
    }
  } finally {
    await stop(server.child);
  }

  // The same walk on servers whose requests commit only their events' journal (JOURNAL), only
  // the durable floor (FLOOR), and nothing (UNAUDITED), bench-only switches, one after the other
  // on the same database: how much of the walk's time its AuditEvents take (one per patient per
  // page), and what a cheaper durable audit could save.
  const others: Record<string, Walk> = {};
  const variants = [
    ['journal', 'journal only (b1)', JOURNAL],
    ['floor', 'durable floor only (b0)', FLOOR],
    ['unaudited', 'audit OFF', UNAUDITED],
  ] as const;
  for (const [name, label, env] of variants) {
    if (name !== 'unaudited' && databaseUrl) continue;
    const s = await startCustodian(dataDir, clientsFile, databaseUrl, env);
    try {
      const national = { authorization: `Bearer ${(await fetchToken({ base: s.base, clientId: 'national', privateJwk: keys.national, scope: 'system/*.cruds', purpose: 'HOPERAT' })).access_token}` };
      others[name] = await warmWalk(s.base, national);
      process.stdout.write(`  the same walk, ${label.padEnd(45)}${walkLine(others[name])}\n`);
    } finally {
      await stop(s.child);
    }
  }

  process.stdout.write('\nRatios to GET /Patient/{id}, same run (target >= 0.50):\n');
  const single = ['nhs', 'family', 'consent', 'audit'] as const;
  let slowest: (typeof single)[number] = single[0];
  for (const k of single) {
    process.stdout.write(`  ${results[k].name.padEnd(58)} ${ratio(results[k], results.read)}x\n`);
    if (results[k].rps < results[slowest].rps) slowest = k;
  }
  process.stdout.write(`  Consent walk: ${(walk.resources / walk.seconds).toFixed(0)} resources/s (target >= 20000)${Object.entries(others)
    .map(([name, w]) => `; ${name}: ${(w.resources / w.seconds).toFixed(0)}`)
    .join('')}\n`);
  process.stdout.write(`  AuditEvents left to index (search) after each workload:\n${backlogs.map((b) => `    ${b}\n`).join('')}`);

  const queries: Record<(typeof single)[number], [ResourceType, string]> = {
    nhs: ['Patient', `identifier=${NHS}|${nhsNumber(4242)}`],
    family: ['Patient', `family=Smith21&birthdate=ge1960-01-01&birthdate=le1970-12-31`],
    consent: ['Consent', 'patient=p-4242&status=active'],
    audit: ['AuditEvent', 'patient=p-4242&date=ge2026-02-01&_sort=-date&_count=50'],
  };
  process.stdout.write(`\nQuery plan of the slowest single-patient search (${results[slowest].name}):\n`);
  for (const line of await explain(database, ...queries[slowest])) process.stdout.write(`  ${line}\n`);

  if (!databaseUrl) fs.rmSync(dataDir, { recursive: true, force: true });
  if (Object.values(results).some((r) => r.errors || r.non2xx)) {
    process.stdout.write('\nSome requests failed; the figures above are not valid.\n');
    ok = false;
  }
  return ok;
}
