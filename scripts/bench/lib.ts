import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import autocannon from 'autocannon';
import type { JWK } from 'jose';
import { generateJwkPair } from '../../server/access/keys';
import type { DatabaseConfig } from '../../server/config';

/** What every benchmark workload shares: the server processes, the load generator, the clients. */

export const DURATION = Number(process.env.BENCH_DURATION ?? 10);
export const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
export const MAIN = path.resolve(__dirname, '..', '..', 'server', 'main.js');
export const BASELINE = path.resolve(__dirname, 'baseline-server.js');
export const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
/** The server settings without the audit trail (a bench-only switch): what auditing costs. */
export const UNAUDITED = { LOG_LEVEL: 'silent', CUSTODIAN_BENCH_UNAUDITED: '1' };
/**
 * The server settings of the floor (a bench-only switch, SQLite only): each request commits one
 * 8-byte row through the audit worker's group commit and fsync instead of its AuditEvents. What
 * any audit that is durable before the response costs here, whatever it writes.
 */
export const FLOOR = { LOG_LEVEL: 'silent', CUSTODIAN_BENCH_AUDIT_FLOOR: 'row' };
/**
 * The server settings of the journal (a bench-only switch, SQLite only): each request's BALP
 * events are built, serialised and hash-chained as the trail's are, then committed to one table
 * of their own, through the same group commit and fsync; no history, queue, index or chain rows.
 * What an audit that stored its events whole before the response and deferred the rest would cost.
 */
export const JOURNAL = { LOG_LEVEL: 'silent', CUSTODIAN_BENCH_AUDIT_FLOOR: 'journal' };

export interface Result {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

/** Starts a server script and resolves with its base URL once it logs `listening at …`. */
export function start(script: string, env: Record<string, string>): Promise<{ child: ChildProcess; base: string }> {
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

export function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/**
 * Seconds of load before a workload is measured (BENCH_WARMUP, default 3): a server process
 * fresh from start-up spends its first seconds compiling (V8 optimises the hot paths once they
 * have run a while), and the audited server has two isolates to warm (the main thread and the
 * audit worker). Measuring from the first request measured that warm-up, not the server.
 */
export const WARMUP = Number(process.env.BENCH_WARMUP ?? 3);

/** One autocannon workload (loopback, bounded in time, after WARMUP seconds of the same load), printed as it finishes. */
export async function run(name: string, options: autocannon.Options): Promise<Result> {
  if (WARMUP > 0) await autocannon({ connections: CONNECTIONS, ...options, duration: WARMUP });
  const result = await autocannon({ connections: CONNECTIONS, duration: DURATION, ...options });
  const r: Result = {
    name,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
  process.stdout.write(`  ${name.padEnd(58)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${String(r.p50).padStart(4)} ms  p99 ${String(r.p99).padStart(4)} ms${r.non2xx || r.errors ? `  (non-2xx ${r.non2xx}, errors ${r.errors})` : ''}\n`);
  return r;
}

/** Registers benchmark clients (all scopes) in a clients.json under `dataDir`; returns their private keys. */
export async function benchClients(
  dataDir: string,
  specs: readonly { clientId: string; ods: string; scopes?: string[]; purposes?: string[]; roles?: string[] }[],
): Promise<{ clientsFile: string; keys: Record<string, JWK> }> {
  const keys: Record<string, JWK> = {};
  const entries = [];
  for (const s of specs) {
    const { privateJwk, publicJwk } = await generateJwkPair();
    keys[s.clientId] = privateJwk;
    entries.push({
      client_id: s.clientId,
      name: `Benchmark ${s.clientId}`,
      jwks: { keys: [publicJwk] },
      organization: { identifier: { system: ODS, value: s.ods } },
      scopes: s.scopes ?? ['system/*.cruds'],
      purposes: s.purposes ?? ['TREAT'],
      ...(s.roles ? { roles: s.roles } : {}),
    });
  }
  const clientsFile = path.join(dataDir, 'clients.json');
  fs.writeFileSync(clientsFile, JSON.stringify(entries, null, 2));
  return { clientsFile, keys };
}

export const ratio = (x: Result, y: Result) => (x.rps / y.rps).toFixed(2);

/** The database a workload runs on: BENCH_DATABASE_URL (an empty PostgreSQL database) or a fresh SQLite file in `dataDir`. */
export function benchDatabase(dataDir: string): { database: DatabaseConfig; url?: string } {
  const url = process.env.BENCH_DATABASE_URL;
  return url
    ? { database: { dialect: 'postgres', url, poolMax: 10 }, url }
    : { database: { dialect: 'sqlite', storage: path.join(dataDir, 'custodian.sqlite'), synchronous: 'FULL' } };
}

/** Starts the Custodian server process on a workload's data directory, clients and database. */
export function startCustodian(dataDir: string, clientsFile: string, databaseUrl: string | undefined, env: Record<string, string> = {}): Promise<{ child: ChildProcess; base: string }> {
  return start(MAIN, {
    PORT: '0',
    LOG_LEVEL: 'error',
    CUSTODIAN_DATA_DIR: dataDir,
    CUSTODIAN_CLIENTS: clientsFile,
    CUSTODIAN_TOKEN_LIFETIME: '3600',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    ...env,
  });
}

/** AuditEvents the server at `base` has yet to index for search (its /healthz). */
export async function auditBacklog(base: string): Promise<number> {
  return ((await (await fetch(`${base}/healthz`)).json()) as { auditIndexBacklog: number }).auditIndexBacklog;
}

/**
 * Waits until the server at `base` has indexed its AuditEvent backlog, for at most `seconds`;
 * resolves with whether it did.
 */
export async function backlogIndexed(base: string, seconds = 300): Promise<boolean> {
  for (let i = 0; i < seconds * 10; i++) {
    if ((await auditBacklog(base)) === 0) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return (await auditBacklog(base)) === 0;
}
