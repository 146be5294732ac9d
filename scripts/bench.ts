import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import type { Patient } from 'fhir/r4';
import { generateJwkPair } from '../server/access/keys';
import type { DatabaseConfig } from '../server/config';
import { Store } from '../server/store/store';
import { fetchToken } from './token';

/**
 * `npm run bench`: throughput and latency of Custodian's hot paths as ratios to a bare Express
 * route, measured side by side in one run (these machines are shared and noisy: only ratios
 * from one run mean anything). Loopback only; every workload is bounded in time.
 *
 *   BENCH_DURATION     seconds per workload (default 10)
 *   BENCH_CONNECTIONS  concurrent connections (default 50)
 *   BENCH_PATIENTS     Patients seeded before measuring (default 10000)
 *   BENCH_DATABASE_URL run against this database instead of a fresh SQLite file
 */
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const PATIENTS = Number(process.env.BENCH_PATIENTS ?? 10000);
const MAIN = path.resolve(__dirname, '..', 'server', 'main.js');
const BASELINE = path.resolve(__dirname, 'bench', 'baseline-server.js');

interface Result {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

function start(script: string, env: Record<string, string>): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn(process.execPath, [script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening at (http:\/\/\S+)/.exec(out);
      if (m) resolve({ child, base: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}: ${out}`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

async function run(name: string, options: autocannon.Options): Promise<Result> {
  const result = await autocannon({ connections: CONNECTIONS, duration: DURATION, ...options });
  const r: Result = {
    name,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
  process.stdout.write(`  ${name.padEnd(34)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${String(r.p50).padStart(4)} ms  p99 ${String(r.p99).padStart(4)} ms${r.non2xx || r.errors ? `  (non-2xx ${r.non2xx}, errors ${r.errors})` : ''}\n`);
  return r;
}

function samplePatient(i: number): Patient {
  return {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:bench:mrn', value: `B${i}` }],
    active: true,
    name: [{ use: 'official', family: `Family${i % 997}`, given: [`Given${i % 113}`, 'Middle'] }],
    telecom: [{ system: 'phone', value: `0161 ${String(i).padStart(6, '0')}`, use: 'home' }],
    gender: i % 2 ? 'female' : 'male',
    birthDate: `19${String(40 + (i % 60)).padStart(2, '0')}-0${1 + (i % 9)}-1${i % 9}`,
    address: [{ line: [`${i} High Street`], city: 'Leeds', postalCode: 'LS1 1AA', country: 'GB' }],
  };
}

async function seed(database: DatabaseConfig): Promise<string[]> {
  const store = await Store.open(database, { now: Date.now });
  const ids: string[] = [];
  const started = performance.now();
  for (let i = 0; i < PATIENTS; i += 500) {
    await store.transaction(async (tx) => {
      for (let j = i; j < Math.min(i + 500, PATIENTS); j++) {
        const id = `bench-${j}`;
        await tx.create('Patient', { ...samplePatient(j), id }, { clientId: 'bench', organization: 'https://fhir.nhs.uk/Id/ods-organization-code|BENCH1' });
        ids.push(id);
      }
    });
  }
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`  seeded ${ids.length} Patients through the store in ${seconds.toFixed(1)} s (${(ids.length / seconds).toFixed(0)} rows/s)\n`);
  await store.close();
  return ids;
}

/** A registry with one client for the benchmark, its private key kept in memory. */
async function benchClient(dataDir: string): Promise<{ clientsFile: string; privateJwk: import('jose').JWK }> {
  const { privateJwk, publicJwk } = await generateJwkPair();
  const clientsFile = path.join(dataDir, 'clients.json');
  const entry = {
    client_id: 'bench',
    name: 'Benchmark client',
    jwks: { keys: [publicJwk] },
    organization: { identifier: { system: 'https://fhir.nhs.uk/Id/ods-organization-code', value: 'BENCH1' } },
    scopes: ['system/*.cruds'],
    purposes: ['TREAT'],
  };
  fs.writeFileSync(clientsFile, JSON.stringify([entry], null, 2));
  return { clientsFile, privateJwk };
}

async function main(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-bench-'));
  const { clientsFile, privateJwk } = await benchClient(dataDir);
  const databaseUrl = process.env.BENCH_DATABASE_URL;
  const database: DatabaseConfig = databaseUrl
    ? { dialect: 'postgres', url: databaseUrl, poolMax: 10 }
    : { dialect: 'sqlite', storage: path.join(dataDir, 'custodian.sqlite'), synchronous: 'FULL' };
  process.stdout.write(`Custodian benchmark: ${CONNECTIONS} connections, ${DURATION} s per workload, ${database.dialect}, ${os.cpus().length} CPUs\n`);
  const ids = await seed(database);

  const results: Result[] = [];
  const baseline = await start(BASELINE, {});
  results.push(await run('(a) bare Express, 1 KB JSON', { url: `${baseline.base}/baseline` }));
  await stop(baseline.child);

  const server = await start(MAIN, {
    PORT: '0',
    LOG_LEVEL: 'error',
    CUSTODIAN_DATA_DIR: dataDir,
    CUSTODIAN_CLIENTS: clientsFile,
    CUSTODIAN_TOKEN_LIFETIME: '3600',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
  });
  try {
    const token = await fetchToken({ base: server.base, clientId: 'bench', privateJwk, scope: 'system/*.cruds' });
    const auth = { authorization: `Bearer ${token.access_token}` };
    let n = 0;
    results.push(
      await run('(b) GET /Patient/{id}', {
        url: server.base,
        headers: auth,
        requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/Patient/${ids[n++ % ids.length]}` }) }],
      }),
    );
    const body = JSON.stringify(samplePatient(424242));
    results.push(
      await run('(c) POST /Patient', {
        url: `${server.base}/Patient`,
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/fhir+json' },
        body,
      }),
    );
  } finally {
    await stop(server.child);
    if (!databaseUrl) fs.rmSync(dataDir, { recursive: true, force: true });
  }

  const base = results[0].rps;
  process.stdout.write('\nRatios to (a), same run:\n');
  for (const r of results.slice(1)) process.stdout.write(`  ${r.name.padEnd(34)} ${(r.rps / base).toFixed(2)}x\n`);
  if (results.some((r) => r.errors || r.non2xx)) {
    process.stdout.write('\nSome requests failed; the figures above are not valid.\n');
    process.exitCode = 1;
  }
}

main().catch((err) => {
  process.stderr.write(String(err instanceof Error ? err.stack : err) + '\n');
  process.exit(1);
});
