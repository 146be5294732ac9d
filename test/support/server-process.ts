import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fetchToken } from '../../scripts/token';
import { makeClients, type ClientSpec } from './auth';
import { freshDatabase, type TestDatabase } from './db';

const MAIN = path.resolve(__dirname, '..', '..', 'server', 'main.js');

export interface ServerProcess {
  readonly baseUrl: string;
  readonly child: ChildProcess;
  readonly dataDir: string;
  output(): string;
  /** Sends a signal and resolves with the exit code (a data directory startServer made is removed then). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts the real server (`node dist/server/main.js`) on an ephemeral loopback port. */
export async function startServer(env: Record<string, string> = {}): Promise<ServerProcess> {
  // A data directory made here is removed when the server is stopped; one given is the caller's.
  const owned = env.CUSTODIAN_DATA_DIR === undefined;
  const dataDir = env.CUSTODIAN_DATA_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-e2e-'));
  const removeOwned = (code: number | null) => {
    if (owned) fs.rmSync(dataDir, { recursive: true, force: true });
    return code;
  };
  const child = spawn(process.execPath, [MAIN], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'error', CUSTODIAN_DATA_DIR: dataDir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const baseUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 30000);
    const check = () => {
      const m = /listening at (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${out}`));
    });
  });
  return {
    baseUrl,
    child,
    dataDir,
    output: () => out,
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      return new Promise((resolve) => {
        // Exited already, by itself or by a signal (a killed process has no exit code): no 'exit' is coming.
        if (child.exitCode !== null || child.signalCode !== null) return resolve(removeOwned(child.exitCode));
        child.once('exit', (code) => resolve(removeOwned(code)));
        child.kill(signal);
      });
    },
  };
}

/** A fresh database, a data directory and a client registry for end-to-end tests of server processes. */
export interface ProcessFixture {
  readonly db: TestDatabase;
  readonly dir: string;
  /** The environment a server process on this fixture runs with. */
  readonly env: Record<string, string>;
  /** An access token through the real token flow against a running server. */
  token(base: string, clientId: string, scope: string, purpose?: string): Promise<string>;
  cleanup(): Promise<void>;
}

export async function processFixture(clients: ClientSpec[], prefix = 'custodian-e2e-'): Promise<ProcessFixture> {
  const db = await freshDatabase();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const made = await makeClients(clients);
  fs.writeFileSync(path.join(dir, 'clients.json'), JSON.stringify(made.json));
  return {
    db,
    dir,
    env: { DATABASE_URL: db.url, CUSTODIAN_DATA_DIR: dir, CUSTODIAN_CLIENTS: path.join(dir, 'clients.json'), CUSTODIAN_SQLITE_SYNC: 'FULL' },
    async token(base, clientId, scope, purpose) {
      return (await fetchToken({ base, clientId, privateJwk: made.clients.get(clientId)!.privateJwk, scope, purpose })).access_token;
    },
    async cleanup() {
      await db.drop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A GP that writes and reads Patients, and an auditor: the clients of the load-under-fault tests. */
export const GP_AND_AUDITOR: ClientSpec[] = [
  { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds'], purposes: ['TREAT'] },
  { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
];

/** Creates `count` Patients named `${family}${i}` through a running server; returns their ids. */
export async function createPatients(base: string, token: string, count: number, family: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const res = await fetch(`${base}/Patient`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', name: [{ family: `${family}${i}` }] }),
    });
    ids.push(((await res.json()) as { id: string }).id);
  }
  return ids;
}
