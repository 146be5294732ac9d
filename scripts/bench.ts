import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import type { Consent, Patient } from 'fhir/r4';
import type { DatabaseConfig } from '../server/config';
import { Store } from '../server/store/store';
import { feedBench } from './bench/feed';
import { auditBacklog, backlogIndexed, BASELINE, benchClients, benchDatabase, CONNECTIONS, DURATION, FLOOR, JOURNAL, ODS, ratio, run, start, startCustodian, stop, UNAUDITED, WARMUP, type Result } from './bench/lib';
import { searchBench } from './bench/search';
import { fetchToken } from './token';

/**
 * `npm run bench`: throughput and latency of Custodian's hot paths as ratios, measured side by
 * side in one run (these machines are shared and noisy: only ratios from one run mean anything).
 * Loopback only; every workload is bounded in time.
 *
 *   BENCH_ONLY         run one workload family: foundation (reads, writes, consent, audit), search or feed
 *   BENCH_DURATION     seconds per workload (default 10)
 *   BENCH_WARMUP       seconds of the same load before each measured workload (default 3; bench/lib.ts)
 *   BENCH_CONNECTIONS  concurrent connections (default 50)
 *   BENCH_PATIENTS     Patients seeded before the foundation workloads (default 10000)
 *   BENCH_AB_ROUNDS    alternating rounds of the audited and unaudited read (default 3)
 *   BENCH_INTERLEAVED_SLICES, BENCH_INTERLEAVED_SLICE_SECONDS  slices of each in the interleaved measurement (default 6 of 3 s; SQLite only)
 *   BENCH_SEARCH_PATIENTS  Patients (and Consents; 10 AuditEvents each) for the search workload (default 100000)
 *   BENCH_DATABASE_URL run against this (empty) PostgreSQL database instead of a fresh SQLite file
 *   BENCH_FEED_CONSENTS  Consents for the feed workload (default 100000; scripts/bench/feed.ts)
 */
const PATIENTS = Number(process.env.BENCH_PATIENTS ?? 10000);
/** Patients with 5 Consents each; the even ones permit the hospital, the odd ones do not. */
const COHORT = Math.min(2000, PATIENTS);
/** Alternating rounds of (b) and (f), each on a fresh server process (BENCH_AB_ROUNDS, 0 for none). */
const AB_ROUNDS = Number(process.env.BENCH_AB_ROUNDS ?? 3);
/** Slices of each of (b), (b1), (b0) and (f) in the interleaved measurement (BENCH_INTERLEAVED_SLICES, 0 for none), and their length in seconds. */
const INTERLEAVED_SLICES = Number(process.env.BENCH_INTERLEAVED_SLICES ?? 6);
const INTERLEAVED_SLICE_SECONDS = Number(process.env.BENCH_INTERLEAVED_SLICE_SECONDS ?? 3);
/** CPU seconds a process has used, all its threads (Linux /proc; 0 elsewhere). */
function processCpuSeconds(pid: number): number {
  try {
    // Fields after the command name: utime and stime are the 12th and 13th, in clock ticks (100 a second).
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** The interleaved measurement: (b), (b1) and (b0) each against (f), in total and slice by slice. */
interface Interleaved {
  readonly b: { ratio: number; slices: number[] };
  readonly b1: { ratio: number; slices: number[] };
  readonly b0: { ratio: number; slices: number[] };
}

function samplePatient(i: number): Patient {
  return {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:bench:mrn', value: `B${i}` }, ...(i < COHORT ? [{ system: 'urn:bench:cohort', value: 'C1' }] : [])],
    active: true,
    name: [{ use: 'official', family: `Family${i % 997}`, given: [`Given${i % 113}`, 'Middle'] }],
    telecom: [{ system: 'phone', value: `0161 ${String(i).padStart(6, '0')}`, use: 'home' }],
    gender: i % 2 ? 'female' : 'male',
    birthDate: `19${String(40 + (i % 60)).padStart(2, '0')}-0${1 + (i % 9)}-1${i % 9}`,
    address: [{ line: [`${i} High Street`], city: 'Leeds', postalCode: 'LS1 1AA', country: 'GB' }],
    managingOrganization: { identifier: { system: ODS, value: 'BENCH1' } },
  };
}

/** Five Consents for patient i: for even i one of them permits the hospital (HOSP1). */
function sampleConsents(i: number): Consent[] {
  const actor = (code: string) => [{ role: { text: 'recipient' }, reference: { identifier: { system: ODS, value: code } } }];
  const base = (n: number, provision: Consent['provision']): Consent => ({
    resourceType: 'Consent',
    id: `bench-${i}-c${n}`,
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/bench-${i}` },
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision,
  });
  return [
    base(0, { type: i % 2 === 0 ? 'permit' : 'deny', actor: actor('HOSP1'), purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }] }),
    base(1, { type: 'deny', actor: actor('X1') }),
    base(2, { type: 'permit', actor: actor('X2'), period: { start: '2020-01-01', end: '2030-12-31' } }),
    base(3, { type: 'deny', purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HMARKT' }] }),
    base(4, { type: 'permit', actor: actor('X3'), class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Patient' }] }),
  ];
}

async function seed(database: DatabaseConfig): Promise<string[]> {
  const store = await Store.open(database, { now: Date.now });
  const ids: string[] = [];
  const writer = { clientId: 'bench', organization: `${ODS}|BENCH1` };
  let started = performance.now();
  for (let i = 0; i < PATIENTS; i += 500) {
    await store.transaction(async (tx) => {
      for (let j = i; j < Math.min(i + 500, PATIENTS); j++) {
        const id = `bench-${j}`;
        await tx.create('Patient', { ...samplePatient(j), id }, writer);
        ids.push(id);
      }
    });
  }
  let seconds = (performance.now() - started) / 1000;
  process.stdout.write(`  seeded ${ids.length} Patients through the store in ${seconds.toFixed(1)} s (${(ids.length / seconds).toFixed(0)} rows/s)\n`);
  started = performance.now();
  for (let i = 0; i < COHORT; i += 100) {
    await store.transaction(async (tx) => {
      for (let j = i; j < Math.min(i + 100, COHORT); j++) for (const c of sampleConsents(j)) await tx.create('Consent', c, writer);
    });
  }
  seconds = (performance.now() - started) / 1000;
  process.stdout.write(`  seeded ${COHORT * 5} Consents (5 for each of ${COHORT} Patients) in ${seconds.toFixed(1)} s (${((COHORT * 5) / seconds).toFixed(0)} rows/s)\n`);
  await store.analyze();
  await store.close();
  return ids;
}

/** The foundation workloads: reads, writes, reads through a Consent, the audit trail's cost. */
async function foundationBench(): Promise<boolean> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-bench-'));
  // The custodian of every seeded Patient, and a hospital some Consents permit.
  const { clientsFile, keys } = await benchClients(dataDir, [
    { clientId: 'bench', ods: 'BENCH1' },
    { clientId: 'hospital', ods: 'HOSP1' },
  ]);
  const { database, url: databaseUrl } = benchDatabase(dataDir);
  process.stdout.write(`Custodian benchmark: ${CONNECTIONS} connections, ${DURATION} s per workload, ${database.dialect}, ${os.cpus().length} CPUs\n`);
  const ids = await seed(database);

  const results: Record<string, Result> = {};
  const baseline = await start(BASELINE, {});
  results.a = await run('(a) bare Express, 1 KB JSON', { url: `${baseline.base}/baseline` });
  await stop(baseline.child);

  const server = await startCustodian(dataDir, clientsFile, databaseUrl);
  let halfHiddenPage = 0;
  let auditRowsPerSecond = 0;
  let largestBatch = 0;
  let auditCommitsPerSecond = 0;
  const health = async () => (await (await fetch(`${server.base}/healthz`)).json()) as { auditEventsWritten: number; largestAuditBatch: number; auditCommits: number };
  // AuditEvents are indexed for search in the background, yielding to requests. Each workload
  // starts with an empty backlog, and how much a workload left behind is reported.
  const backlogs: string[] = [];
  const settle = async (workload: string) => {
    const left = await auditBacklog(server.base);
    const t = performance.now();
    await backlogIndexed(server.base);
    backlogs.push(`${workload} ${left} events, indexed in ${((performance.now() - t) / 1000).toFixed(1)} s after it`);
  };
  try {
    const auth = async (clientId: string) => ({ authorization: `Bearer ${(await fetchToken({ base: server.base, clientId, privateJwk: keys[clientId], scope: 'system/*.cruds' })).access_token}` });
    const custodian = await auth('bench');
    const hospital = await auth('hospital');
    let n = 0;
    const before = await health();
    const t0 = performance.now();
    results.b = await run('(b) GET /Patient/{id}, custodian', {
      url: server.base,
      headers: custodian,
      requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/Patient/${ids[n++ % ids.length]}` }) }],
    });
    const after = await health();
    const elapsed = (performance.now() - t0) / 1000;
    auditRowsPerSecond = (after.auditEventsWritten - before.auditEventsWritten) / elapsed;
    auditCommitsPerSecond = (after.auditCommits - before.auditCommits) / elapsed;
    largestBatch = after.largestAuditBatch;
    await settle('(b)');
    let m = 0;
    results.d = await run('(d) GET /Patient/{id}, hospital via a Consent', {
      url: server.base,
      headers: hospital,
      requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/Patient/bench-${(2 * m++) % COHORT}` }) }],
    });
    await settle('(d)');
    const page = (await (await fetch(`${server.base}/Patient?identifier=urn:bench:cohort|C1&_count=50`, { headers: hospital })).json()) as { entry?: unknown[] };
    halfHiddenPage = page.entry?.length ?? 0;
    results.e = await run('(e) search, half the matches hidden, _count=50', {
      url: `${server.base}/Patient?identifier=urn:bench:cohort|C1&_count=50`,
      headers: hospital,
    });
    await settle('(e)');
    results.c = await run('(c) POST /Patient', {
      url: `${server.base}/Patient`,
      method: 'POST',
      headers: { ...custodian, 'content-type': 'application/fhir+json' },
      body: JSON.stringify(samplePatient(424242)),
    });
    await settle('(c)');
  } finally {
    await stop(server.child);
  }

  // The same read with the audit trail switched off (a bench-only setting), same database; then
  // (b)/(f) again, alternating in rounds: on a shared machine one pair can be off by half.
  const pairs: number[] = [];
  let interleavedRatio: Interleaved | undefined;
  const failures: string[] = [];
  try {
    results.f = await readRound('(f) GET /Patient/{id}, custodian, audit OFF', UNAUDITED);
    for (let round = 1; round <= AB_ROUNDS; round++) {
      const rb = await readRound(`(b) audited read, round ${round}`, {});
      const rf = await readRound(`(f) unaudited read, round ${round}`, UNAUDITED);
      pairs.push(rb.rps / rf.rps);
      for (const r of [rb, rf]) results[r.name] = r;
    }
    if (INTERLEAVED_SLICES > 0) interleavedRatio = await interleaved();
  } finally {
    if (!databaseUrl) fs.rmSync(dataDir, { recursive: true, force: true });
  }

  /**
   * (b), (b1), (b0) and (f) on four server processes up at once, loaded in turn for slices of a
   * few seconds each: a change in the machine's speed (these machines are shared) reaches all
   * alike, where rounds of 13 s each, one after the other, were seen anywhere from 0.56 to 0.91
   * in one run. (b1), the journal (JOURNAL), (b0), the floor (FLOOR), and (f) read copies of the
   * database. SQLite only: on PostgreSQL they would share one database, and an idle server
   * would index the audited one's queue.
   * Like the rounds, it leaves out the audited server's deferred indexing, which runs between
   * slices (see drained); a failed slice is reported and the rest of the report still printed.
   */
  async function interleaved(): Promise<Interleaved | undefined> {
    if (databaseUrl) {
      process.stdout.write('  (b)/(f) interleaved: SQLite only (the servers would share the PostgreSQL database)\n');
      return undefined;
    }
    const copies: string[] = [];
    const servers: { child: ChildProcess }[] = [];
    try {
      // (b) on the seeded database, the others each on a copy of it.
      const up = async (env: Record<string, string>, copy: boolean) => {
        let dir = dataDir;
        if (copy) {
          dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-bench-copy-'));
          copies.push(dir);
          for (const f of fs.readdirSync(dataDir)) fs.cpSync(path.join(dataDir, f), path.join(dir, f), { recursive: true });
        }
        const s = await startCustodian(dir, clientsFile, undefined, env);
        servers.push(s);
        const options = await custodianReads(s.base);
        return { base: s.base, pid: s.child.pid!, load: (duration: number) => autocannon({ ...options, connections: CONNECTIONS, duration }) };
      };
      const loads = { b: await up({}, false), b1: await up(JOURNAL, true), b0: await up(FLOOR, true), f: await up(UNAUDITED, true) };
      // The audited server indexes what a slice queued before another is loaded, then its
      // checkpoints (every 200 ms) move what that wrote into the database file.
      const drained = async (base: string) => {
        if (!(await backlogIndexed(base, 60))) throw new Error('the audited server did not index its backlog within 60 s');
        await new Promise((r) => setTimeout(r, 500));
      };
      const keys = ['b', 'b1', 'b0', 'f'] as const;
      for (const k of keys) {
        await loads[k].load(WARMUP || 1);
        if (k === 'b') await drained(loads.b.base);
      }
      const total = { b: { requests: 0, seconds: 0, cpu: 0 }, b1: { requests: 0, seconds: 0, cpu: 0 }, b0: { requests: 0, seconds: 0, cpu: 0 }, f: { requests: 0, seconds: 0, cpu: 0 } };
      // CPU (b) spends after its slices on what it deferred: moving its events out of the journal
      // and indexing them (and its checkpoints meanwhile). Not in its req/s, reported beside it.
      let deferredCpu = 0;
      const slices: { b: number; b1: number; b0: number }[] = [];
      for (let i = 0; i < INTERLEAVED_SLICES; i++) {
        // Which goes first rotates, so none always follows another.
        const order = keys.map((_, j) => keys[(i + j) % keys.length]);
        const rps: Record<string, number> = {};
        for (const which of order) {
          const t = performance.now();
          const cpu = processCpuSeconds(loads[which].pid);
          const r = await loads[which].load(INTERLEAVED_SLICE_SECONDS);
          total[which].cpu += processCpuSeconds(loads[which].pid) - cpu;
          if (r.errors || r.timeouts || r.non2xx) throw new Error(`${which}: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx`);
          // Requests over the slice's whole time, connecting included, for all alike.
          const seconds = (performance.now() - t) / 1000;
          total[which].requests += r.requests.total;
          total[which].seconds += seconds;
          rps[which] = r.requests.total / seconds;
          if (which === 'b') {
            const before = processCpuSeconds(loads.b.pid);
            await drained(loads.b.base);
            deferredCpu += processCpuSeconds(loads.b.pid) - before;
          }
        }
        slices.push({ b: rps.b / rps.f, b1: rps.b1 / rps.f, b0: rps.b0 / rps.f });
      }
      const rate = (k: (typeof keys)[number]) => total[k].requests / total[k].seconds;
      process.stdout.write(`  (b) / (b1) / (b0) / (f) interleaved, ${INTERLEAVED_SLICES} x ${INTERLEAVED_SLICE_SECONDS} s each   ${keys.map((k) => rate(k).toFixed(0)).join(' / ')} req/s\n`);
      // CPU per request counts every thread of the server process (the audit worker, SQLite's I/O
      // threads, V8's helpers): it varies less with the machine's speed than req/s does.
      process.stdout.write(`  server CPU per request, (b) / (b1) / (b0) / (f)             ${keys.map((k) => ((1e6 * total[k].cpu) / total[k].requests).toFixed(0)).join(' / ')} µs\n`);
      process.stdout.write(`  (b)'s deferred work after its slices (journal moves, indexing)  ${((1e6 * deferredCpu) / total.b.requests).toFixed(0)} µs of CPU more per request\n`);
      const of = (k: 'b' | 'b1' | 'b0') => ({ ratio: rate(k) / rate('f'), slices: slices.map((x) => x[k]) });
      return { b: of('b'), b1: of('b1'), b0: of('b0') };
    } catch (err) {
      process.stdout.write(`  (b)/(f) interleaved: failed (${err instanceof Error ? err.message : String(err)})\n`);
      failures.push('interleaved');
      return undefined;
    } finally {
      for (const s of servers) await stop(s.child);
      for (const dir of copies) fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  /** The load of (b) and (f): the custodian reading its Patients one after another, with a token of the server at `base`. */
  async function custodianReads(base: string): Promise<autocannon.Options> {
    const token = (await fetchToken({ base, clientId: 'bench', privateJwk: keys.bench, scope: 'system/*.cruds' })).access_token;
    let n = 0;
    return {
      url: base,
      headers: { authorization: `Bearer ${token}` },
      requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/Patient/${ids[n++ % ids.length]}` }) }],
    };
  }

  /** The custodian's read on a server of its own, started with `env`; the audit backlog is indexed before it stops. */
  async function readRound(name: string, env: Record<string, string>): Promise<Result> {
    const s = await startCustodian(dataDir, clientsFile, databaseUrl, env);
    try {
      const result = await run(name, await custodianReads(s.base));
      await backlogIndexed(s.base);
      return result;
    } finally {
      await stop(s.child);
    }
  }

  process.stdout.write('\nRatios, same run:\n');
  process.stdout.write(`  (b) read / (a) bare Express                    ${ratio(results.b, results.a)}x\n`);
  process.stdout.write(`  (c) create / (a) bare Express                  ${ratio(results.c, results.a)}x\n`);
  process.stdout.write(`  (d) read via Consent / (b) custodian read      ${ratio(results.d, results.b)}x   (target >= 0.80)\n`);
  process.stdout.write(`  (e) half-hidden search: entries on page 1      ${halfHiddenPage} of 50 (full pages: ${halfHiddenPage === 50 ? 'yes' : 'NO'})\n`);
  process.stdout.write(`  (b) audited read / (f) unaudited read          ${ratio(results.b, results.f)}x   (target >= 0.85)\n`);
  if (pairs.length) {
    const median = [...pairs].sort((x, y) => x - y)[Math.floor(pairs.length / 2)];
    process.stdout.write(`  (b)/(f) in alternating rounds                  ${pairs.map((p) => p.toFixed(2)).join(', ')}; median ${median.toFixed(2)}x\n`);
  }
  if (interleavedRatio) {
    const line = (label: string, r: { ratio: number; slices: number[] }, target: string) => {
      const sorted = [...r.slices].sort((x, y) => x - y);
      const mid = sorted.length / 2;
      const median = sorted.length % 2 ? sorted[Math.floor(mid)] : (sorted[mid - 1] + sorted[mid]) / 2;
      process.stdout.write(`  ${label.padEnd(47)}${r.ratio.toFixed(2)}x${target}   (slices ${sorted[0].toFixed(2)}-${sorted[sorted.length - 1].toFixed(2)}, median ${median.toFixed(2)})\n`);
    };
    line('(b)/(f) interleaved (servers up, slices)', interleavedRatio.b, '   (target >= 0.85)');
    line('(b1) journal only / (f), same slices', interleavedRatio.b1, '');
    line('(b0) durable floor / (f), same slices', interleavedRatio.b0, '');
  }
  process.stdout.write(`  audit rows committed during (b)                ${auditRowsPerSecond.toFixed(0)} rows/s in ${auditCommitsPerSecond.toFixed(0)} commits/s (mean group commit ${(auditRowsPerSecond / Math.max(auditCommitsPerSecond, 1)).toFixed(1)} events, largest ${largestBatch})\n`);
  process.stdout.write(`  AuditEvents left to index (search) after each workload:\n${backlogs.map((b) => `    ${b}\n`).join('')}`);
  if (failures.length || Object.values(results).some((r) => r.errors || r.non2xx)) {
    process.stdout.write('\nSome requests failed; the figures above are not valid.\n');
    return false;
  }
  return true;
}

async function main(): Promise<void> {
  const only = process.env.BENCH_ONLY;
  const families: Record<string, () => Promise<boolean>> = { foundation: foundationBench, search: searchBench, feed: async () => Boolean(await feedBench()) };
  if (only && !families[only]) throw new Error(`BENCH_ONLY must be one of ${Object.keys(families).join(', ')}`);
  let ok = true;
  for (const [name, bench] of Object.entries(families)) if (!only || only === name) ok = (await bench()) && ok;
  if (!ok) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(String(err instanceof Error ? err.stack : err) + '\n');
  process.exit(1);
});
