import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BundleEntry, Consent, Patient } from 'fhir/r4';
import { fetchToken } from '../../scripts/token';
import { Store } from '../../server/store/store';
import { makeClients } from '../support/auth';
import { freshDatabase, type TestDatabase } from '../support/db';
import { startServer, type ServerProcess } from '../support/server-process';
import { Receiver } from '../feed/receiver';

const PULLER = path.resolve(__dirname, '..', '..', 'scripts', 'pull-consents.js');
const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
const PATIENTS = 1000;
const CONSENTS = 10000;
const WITHDRAWN = 1000;
const DELETED = 200;

function consentFor(i: number, status: Consent['status'] = 'active'): Consent {
  return {
    resourceType: 'Consent',
    id: `seed-${i}`,
    status,
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/seed-p${i % PATIENTS}` },
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: i % 3 ? 'OPTIN' : 'OPTOUT' }] },
  };
}

/** Runs the puller as its own process; resolves with its exit code and output. */
function pull(args: string[], onStart?: (kill: () => void) => void): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [PULLER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('exit', (code, signal) => resolve({ code, signal, output }));
    onStart?.(() => child.kill('SIGKILL'));
  });
}

async function until(what: string, check: () => Promise<boolean>, ms = 30000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * End to end, against the server process seeded with 10,000 Consents of which 1,000 were
 * withdrawn and 200 deleted:
 * - `scripts/pull-consents` (fhir-kit-client) is killed mid-walk and resumed while a GP keeps
 *   writing; at the end every version is in its file once and the count reconciles;
 * - the server is killed (SIGKILL) while notifications are queued and an export is running;
 *   after a restart every change is delivered at least once and the export completes.
 */
describe('End to end: the national consent feed against the server process', function () {
  this.timeout(360000);
  let db: TestDatabase;
  let dir: string;
  let server: ServerProcess;
  let env: Record<string, string>;
  let receiver: Receiver;
  let common: string[];
  let gpToken: string;
  let keys: Map<string, { privateJwk: import('jose').JWK }>;

  before(async () => {
    db = await freshDatabase();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-pull-'));
    const store = await Store.open(db.config, { now: Date.now });
    const writer = { clientId: 'gp', organization: `${ODS}|GP1` };
    const patients: Patient[] = Array.from({ length: PATIENTS }, (_, i) => ({ resourceType: 'Patient', id: `seed-p${i}`, managingOrganization: { identifier: { system: ODS, value: 'GP1' } } }));
    await store.transaction((tx) => tx.createMany('Patient', patients, writer));
    for (let i = 0; i < CONSENTS; i += 1000) {
      await store.transaction((tx) => tx.createMany('Consent', Array.from({ length: 1000 }, (_, k) => consentFor(i + k)), writer));
    }
    // Withdrawals: 1,000 Consents made inactive, 200 of them then deleted.
    for (let i = 0; i < WITHDRAWN; i += 250) {
      await store.transaction(async (tx) => {
        for (let k = i; k < i + 250; k++) {
          const current = await tx.current('Consent', `seed-${k * 7}`);
          const v2 = await tx.update(current!, consentFor(k * 7, 'inactive'), 'PUT');
          if (k < DELETED) await tx.delete(v2);
        }
      });
    }
    await store.analyze();
    await store.close();

    const { clients, json } = await makeClients([
      { clientId: 'national', ods: 'X26', scopes: ['system/Consent.rs'], purposes: ['PUBHLTH'], roles: ['national-service'] },
      { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
    ]);
    fs.writeFileSync(path.join(dir, 'clients.json'), JSON.stringify(json));
    fs.writeFileSync(path.join(dir, 'national.jwk.json'), JSON.stringify(clients.get('national')!.privateJwk));
    keys = clients;
    receiver = await Receiver.start();
    env = {
      DATABASE_URL: db.url,
      CUSTODIAN_DATA_DIR: dir,
      CUSTODIAN_CLIENTS: path.join(dir, 'clients.json'),
      CUSTODIAN_SQLITE_SYNC: 'FULL',
      CUSTODIAN_SUBSCRIPTION_ENDPOINTS: `${receiver.base}/hooks`,
      CUSTODIAN_DELIVERY_TIMEOUT_MS: '1000',
      CUSTODIAN_DELIVERY_RETRY_MS: '100',
      CUSTODIAN_DELIVERY_RETRY_MAX_MS: '400',
      CUSTODIAN_FEED_POLL_MS: '100',
      CUSTODIAN_FEED_LEASE_MS: '1500',
      CUSTODIAN_EXPORT_FILE_RESOURCES: '2500',
    };
    server = await startServer(env);
    common = ['--base', server.baseUrl, '--client', 'national', '--key', path.join(dir, 'national.jwk.json'), '--purpose', 'PUBHLTH', '--out', path.join(dir, 'consents.ndjson'), '--count', '1000'];
    gpToken = (await fetchToken({ base: server.baseUrl, clientId: 'gp', privateJwk: clients.get('gp')!.privateJwk, scope: 'system/Consent.cruds' })).access_token;
  });
  after(async () => {
    await server?.stop('SIGKILL');
    await receiver?.close();
    await db.drop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('pulls every version exactly once across a stop, a SIGKILL and concurrent writes, and the counts reconcile', async () => {
    const out = path.join(dir, 'consents.ndjson');
    const state = `${out}.state.json`;
    // 1. killed while walking, and a torn last write left behind
    const killed = await pull(common, (kill) => {
      const timer = setInterval(() => {
        if (fs.existsSync(state) && JSON.parse(fs.readFileSync(state, 'utf8')).lines >= 2000) {
          clearInterval(timer);
          kill();
        }
      }, 5);
    });
    assert.equal(killed.signal, 'SIGKILL', `the puller was to be killed mid-walk: ${killed.output}`);
    fs.appendFileSync(out, '{"fullUrl":"torn-');
    // 2. resumed while the GP changes Consents
    const writes = (async () => {
      for (let i = 0; i < 20; i++) {
        const res = await fetch(`${server.baseUrl}/Consent/seed-${9000 + i}`, {
          method: 'PUT',
          headers: { Authorization: `Bearer ${gpToken}`, 'Content-Type': 'application/fhir+json' },
          body: JSON.stringify(consentFor(9000 + i, "inactive")),
        });
        assert.equal(res.status, 200, await res.text());
      }
    })();
    const resumed = await pull(common);
    await writes;
    assert.equal(resumed.code, 0, resumed.output);
    assert.match(resumed.output, /cut .* back/);
    assert.match(resumed.output, /reconciled/);
    // 3. once more after the writes: the new versions arrive, and it reconciles again
    const last = await pull(common);
    assert.equal(last.code, 0, last.output);

    const lines = fs.readFileSync(out, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as BundleEntry);
    const keys = lines.map((e) => `${e.fullUrl!.split('/').pop()}|${e.response!.etag}`);
    assert.equal(new Set(keys).size, keys.length, 'no version twice');
    const expected = CONSENTS + WITHDRAWN + DELETED + 20;
    assert.equal(keys.length, expected, 'every version: creations, withdrawals, deletions and the concurrent updates');
    assert.equal(lines.filter((e) => e.request!.method === 'DELETE').length, DELETED);
    assert.ok(lines.filter((e) => e.request!.method === 'DELETE').every((e) => e.resource === undefined));
    // in commit order: a resource's versions arrive in order
    const lastVersion = new Map<string, number>();
    for (const k of keys) {
      const [id, etag] = k.split('|');
      const v = Number(etag.replace(/\D/g, ''));
      assert.equal(v, (lastVersion.get(id) ?? 0) + 1, `${id}: versions in order`);
      lastVersion.set(id, v);
    }
  });

  it('exits 1 when the file does not reconcile with the server', async () => {
    const out = path.join(dir, 'consents.ndjson');
    const state = JSON.parse(fs.readFileSync(`${out}.state.json`, 'utf8'));
    // Lose a line behind the puller's back, keeping the state consistent with the file's length.
    const text = fs.readFileSync(out, 'utf8').split('\n');
    const kept = text.slice(1).join('\n');
    fs.writeFileSync(out, kept);
    fs.writeFileSync(`${out}.state.json`, JSON.stringify({ ...state, lines: state.lines - 1, bytes: Buffer.byteLength(kept) }));
    const res = await pull(common);
    assert.equal(res.code, 1, res.output);
    assert.match(res.output, /MISMATCH/);
  });

  it('killed while notifications are queued and an export runs: after a restart every change is delivered at least once and the export completes', async () => {
    const auth = async (clientId: string, scope: string, purpose: string) => ({ Authorization: `Bearer ${(await fetchToken({ base: server.baseUrl, clientId, privateJwk: keys.get(clientId)!.privateJwk, scope, purpose })).access_token}` });
    let national = await auth('national', 'system/Consent.rs', 'PUBHLTH');
    const gp = await auth('gp', 'system/Consent.cruds', 'TREAT');
    const sub = await fetch(`${server.baseUrl}/Subscription`, {
      method: 'POST',
      headers: { ...national, 'Content-Type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Subscription', status: 'requested', reason: 'restart test', criteria: 'Consent?', channel: { type: 'rest-hook', endpoint: `${receiver.base}/hooks/restart`, payload: 'application/fhir+json' } }),
    });
    assert.equal(sub.status, 201, await sub.text());
    receiver.status = 503;
    const expected: string[] = [];
    for (let i = 0; i < 15; i++) {
      const id = `restart-${i}`;
      for (const status of ['active', 'inactive']) {
        const res = await fetch(`${server.baseUrl}/Consent/${id}`, { method: 'PUT', headers: { ...gp, 'Content-Type': 'application/fhir+json' }, body: JSON.stringify({ ...consentFor(i), id, status }) });
        assert.ok(res.status === 200 || res.status === 201, await res.text());
        expected.push(`Consent/${id}/_history/${status === 'active' ? 1 : 2}`);
      }
    }
    const kick = await fetch(`${server.baseUrl}/$export?_type=Consent`, { headers: { ...national, Prefer: 'respond-async' } });
    assert.equal(kick.status, 202);
    const jobPath = new URL(kick.headers.get('content-location')!).pathname;
    await until('a failed delivery and a running export', async () => {
      const res = await fetch(`${server.baseUrl}${jobPath}`, { headers: national });
      await res.arrayBuffer();
      return receiver.received.some((r) => r.path === '/hooks/restart') && /^running: [1-9]/.test(res.headers.get('x-progress') ?? '');
    });
    await server.stop('SIGKILL');
    receiver.status = 200;
    server = await startServer(env);
    national = await auth('national', 'system/Consent.rs', 'PUBHLTH');
    await until('every change delivered', async () => {
      const ok = new Set(receiver.received.filter((r) => r.path === '/hooks/restart' && r.body).map((r) => String(r.headers['x-custodian-resource'])));
      return expected.every((v) => ok.has(v));
    });
    assert.ok(receiver.received.filter((r) => r.path === '/hooks/restart').every((r) => r.headers['x-custodian-resource']), 'each notification names its version, so the receiver can drop repeats');
    let manifest: { output: { url: string; count: number }[] } | undefined;
    await until('the export to finish', async () => {
      const res = await fetch(`${server.baseUrl}${jobPath}`, { headers: national });
      if (res.status === 202) {
        await res.arrayBuffer();
        return false;
      }
      const text = await res.text();
      assert.equal(res.status, 200, `the export resumed and completed (a visible failure would be a 500): ${text}`);
      manifest = JSON.parse(text) as typeof manifest;
      return true;
    });
    const count = (await (await fetch(`${server.baseUrl}/Consent?_summary=count`, { headers: national })).json()) as { total: number };
    const ids: string[] = [];
    for (const o of manifest!.output) {
      const text = await (await fetch(o.url, { headers: { ...national, Accept: 'application/fhir+ndjson' } })).text();
      const lines = text.trimEnd().split('\n');
      assert.equal(lines.length, o.count, 'no file cut short');
      ids.push(...lines.map((l) => (JSON.parse(l) as Consent).id!));
    }
    assert.equal(new Set(ids).size, ids.length, 'no Consent twice');
    assert.equal(ids.length, count.total, 'every Consent of the snapshot');
    // Shutdown waits for the audit trail's deferred indexing; let it catch up first. The walks,
    // the export's downloads and the count each put ~10,000 events on the trail, indexed while
    // the machine has CPU to spare: on a shared machine running other suites that took over 60 s.
    await until('the audit index to catch up', async () => ((await (await fetch(`${server.baseUrl}/healthz`)).json()) as { auditIndexBacklog: number }).auditIndexBacklog === 0, 180000);
    assert.equal(await server.stop('SIGTERM'), 0, 'the workers stop cleanly on SIGTERM');
  });
});
