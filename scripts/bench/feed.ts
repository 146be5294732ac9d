import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Bundle, Consent, Patient } from 'fhir/r4';
import type { DatabaseConfig } from '../../server/config';
import { Store } from '../../server/store/store';
import { fetchToken } from '../token';
import { benchClients, benchDatabase, ODS, startCustodian, stop } from './lib';

/**
 * The national consent feed's workloads (`BENCH_ONLY=feed npm run bench` runs only these):
 * Consents seeded directly through the store in batches, then, against the server process,
 *   - a Bulk Data export of every Consent as NDJSON (kick-off to manifest, then the files);
 *   - a walk of the whole feed, `Consent/_history?_sort=_lastUpdated&_count=1000`.
 * Both as a national service, so every Consent is visible, and audited as in service.
 *
 *   BENCH_FEED_CONSENTS   Consents to seed (default 100000), 10 per Patient
 *   BENCH_DATABASE_URL    an empty PostgreSQL database instead of a fresh SQLite file
 */

function consent(i: number, patients: number): Consent {
  return {
    resourceType: 'Consent',
    id: `feed-${i}`,
    status: i % 10 === 9 ? 'inactive' : 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/feed-p${i % patients}` },
    dateTime: '2026-01-01T09:00:00Z',
    organization: [{ identifier: { system: ODS, value: 'FEEDGP' } }],
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: i % 3 ? 'OPTIN' : 'OPTOUT' }] },
    provision: { type: i % 2 ? 'permit' : 'deny', actor: [{ role: { text: 'recipient' }, reference: { identifier: { system: ODS, value: `ORG${i % 50}` } } }] },
  };
}

async function seed(database: DatabaseConfig, count: number): Promise<void> {
  const store = await Store.open(database, { now: Date.now });
  const writer = { clientId: 'bench', organization: `${ODS}|FEEDGP` };
  const patients = Math.max(1, Math.ceil(count / 10));
  const started = performance.now();
  for (let i = 0; i < patients; i += 2000) {
    const batch: Patient[] = [];
    for (let j = i; j < Math.min(i + 2000, patients); j++) batch.push({ resourceType: 'Patient', id: `feed-p${j}`, managingOrganization: { identifier: { system: ODS, value: 'FEEDGP' } } });
    await store.transaction((tx) => tx.createMany('Patient', batch, writer));
  }
  for (let i = 0; i < count; i += 2000) {
    const batch: Consent[] = [];
    for (let j = i; j < Math.min(i + 2000, count); j++) batch.push(consent(j, patients));
    await store.transaction((tx) => tx.createMany('Consent', batch, writer));
  }
  await store.analyze();
  await store.close();
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`  seeded ${count} Consents of ${patients} Patients through the store in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)} rows/s)\n`);
}

export interface FeedFigures {
  readonly consents: number;
  readonly exportSeconds: number;
  readonly exportPerSecond: number;
  readonly downloadPerSecond: number;
  readonly walkSeconds: number;
  readonly walkPerSecond: number;
}

export async function feedBench(): Promise<FeedFigures> {
  const count = Number(process.env.BENCH_FEED_CONSENTS ?? 100000);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-bench-feed-'));
  const { database, url: databaseUrl } = benchDatabase(dataDir);
  process.stdout.write(`\nNational consent feed: ${count} Consents, ${database.dialect}\n`);
  await seed(database, count);
  const { clientsFile, keys } = await benchClients(dataDir, [{ clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] }]);
  const server = await startCustodian(dataDir, clientsFile, databaseUrl, { CUSTODIAN_FEED_POLL_MS: '50' });
  try {
    const token = (await fetchToken({ base: server.base, clientId: 'national', privateJwk: keys.national, scope: 'system/Consent.rs', purpose: 'PUBHLTH' })).access_token;
    const auth = { Authorization: `Bearer ${token}` };

    // Export: kick-off to manifest, then every file.
    let t0 = performance.now();
    const kick = await fetch(`${server.base}/$export?_type=Consent`, { headers: { ...auth, Prefer: 'respond-async' } });
    if (kick.status !== 202) throw new Error(`kick-off answered ${kick.status}: ${await kick.text()}`);
    const status = kick.headers.get('content-location')!;
    let manifest: { output: { url: string; count: number }[] } | undefined;
    while (!manifest) {
      const res = await fetch(status, { headers: auth });
      if (res.status === 200) manifest = (await res.json()) as typeof manifest;
      else if (res.status === 202) {
        await res.arrayBuffer();
        await new Promise((r) => setTimeout(r, 50));
      } else throw new Error(`export status ${res.status}: ${await res.text()}`);
    }
    const exportSeconds = (performance.now() - t0) / 1000;
    t0 = performance.now();
    let exported = 0;
    for (const o of manifest.output) {
      const text = await (await fetch(o.url, { headers: auth })).text();
      exported += text.split('\n').length - 1;
    }
    const downloadSeconds = (performance.now() - t0) / 1000;
    if (exported !== count) throw new Error(`the export held ${exported} Consents, not ${count}`);
    process.stdout.write(`  (g) $export of ${count} Consents as NDJSON      ${(count / exportSeconds).toFixed(0).padStart(7)} resources/s  (${exportSeconds.toFixed(1)} s kick-off to manifest, ${manifest.output.length} files)\n`);
    process.stdout.write(`      downloading its files                     ${(count / downloadSeconds).toFixed(0).padStart(7)} resources/s  (${downloadSeconds.toFixed(1)} s)\n`);

    // Feed walk: every version, in commit order, a thousand at a time.
    t0 = performance.now();
    let url = `${server.base}/Consent/_history?_sort=_lastUpdated&_count=1000`;
    let versions = 0;
    for (;;) {
      const res = await fetch(url, { headers: auth });
      if (res.status !== 200) throw new Error(`feed page answered ${res.status}: ${await res.text()}`);
      const page = (await res.json()) as Bundle;
      const n = page.entry?.length ?? 0;
      versions += n;
      url = page.link!.find((l) => l.relation === 'next')!.url;
      if (n === 0) break;
    }
    const walkSeconds = (performance.now() - t0) / 1000;
    if (versions !== count) throw new Error(`the walk saw ${versions} versions, not ${count}`);
    process.stdout.write(`  (h) feed walk, _history?_sort=_lastUpdated    ${(versions / walkSeconds).toFixed(0).padStart(7)} versions/s   (${walkSeconds.toFixed(1)} s, pages of 1000)\n`);
    return { consents: count, exportSeconds, exportPerSecond: count / exportSeconds, downloadPerSecond: count / downloadSeconds, walkSeconds, walkPerSecond: versions / walkSeconds };
  } finally {
    await stop(server.child);
    if (!databaseUrl) fs.rmSync(dataDir, { recursive: true, force: true });
  }
}
