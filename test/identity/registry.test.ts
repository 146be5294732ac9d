import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import { fetchToken } from '../../scripts/token';
import { ClientRegistry, parseRegistry, RegistryError } from '../../server/access/registry';
import { makeClients } from '../support/auth';
import { freshDatabase } from '../support/db';
import { startServer } from '../support/server-process';

const run = promisify(execFile);
const MAIN = path.resolve(__dirname, '..', '..', 'server', 'main.js');
const TOKEN = path.resolve(__dirname, '..', '..', 'scripts', 'token.js');

describe('Identity: the client registry', function () {
  this.timeout(60000);
  let good: Record<string, unknown>;
  before(async () => {
    good = (await makeClients([{ clientId: 'ok', ods: 'A1', scopes: ['system/Patient.rs'], purposes: ['TREAT'] }])).json[0] as Record<string, unknown>;
  });

  const broken: [string, (e: Record<string, unknown>) => unknown, RegExp][] = [
    ['not an array', () => ({ clients: [] }), /top level: must be a JSON array/],
    ['an unknown property', (e) => ({ ...e, colour: 'red' }), /entry 0 \(client_id "ok"\): unknown property "colour"/],
    ['a bad client_id', (e) => ({ ...e, client_id: 'has space' }), /client_id must be/],
    ['no name', (e) => ({ ...e, name: '' }), /name must be a non-empty string/],
    ['no keys', (e) => ({ ...e, jwks: { keys: [] } }), /jwks must be/],
    ['a key without kid', (e) => ({ ...e, jwks: { keys: [{ ...(e.jwks as { keys: object[] }).keys[0], kid: undefined }] } }), /jwks.keys\[0\] has no kid/],
    ['a private key', (e) => ({ ...e, jwks: { keys: [{ ...(e.jwks as { keys: object[] }).keys[0], d: 'secret' }] } }), /holds private key material/],
    ['a P-256 key', (e) => ({ ...e, jwks: { keys: [{ ...(e.jwks as { keys: object[] }).keys[0], crv: 'P-256' }] } }), /EC keys must be P-384/],
    ['an organization without reference or identifier', (e) => ({ ...e, organization: { display: 'x' } }), /organization needs a reference or an identifier/],
    ['an unknown scope', (e) => ({ ...e, scopes: ['system/Observation.read'] }), /scope "system\/Observation.read" is not a SMART/],
    ['an unknown purpose', (e) => ({ ...e, purposes: ['SNOOP'] }), /purpose "SNOOP" is not a v3-ActReason code/],
    ['an unknown role', (e) => ({ ...e, roles: ['admin'] }), /role "admin" is not one of auditor, national-service, audit-source/],
    // The server writes its own AuditEvents under this id: a client holding it could pass for the server.
    ['the server\'s own client id', (e) => ({ ...e, client_id: 'custodian-server' }), /client_id "custodian-server" is the server's own/],
  ];
  for (const [what, mutate, message] of broken) {
    it(`refuses ${what}, naming the entry and the problem`, () => {
      const json = mutate(structuredClone(good));
      assert.throws(() => parseRegistry(Array.isArray(json) || (json as { clients?: unknown }).clients ? json : [json], 'clients.json'), (err: Error) => err instanceof RegistryError && message.test(err.message));
    });
  }

  it('refuses a duplicate client_id', () => {
    assert.throws(() => parseRegistry([good, good], 'clients.json'), /entry 1 \(client_id "ok"\): client_id is used by an earlier entry/);
  });

  it('stops the server at start-up with exit code 2 and the reason', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-reg-'));
    const file = path.join(dir, 'clients.json');
    fs.writeFileSync(file, JSON.stringify([{ ...good, purposes: ['SNOOP'] }]));
    const result = await run(process.execPath, [MAIN], { env: { ...process.env, PORT: '0', CUSTODIAN_DATA_DIR: dir, CUSTODIAN_CLIENTS: file } }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((result as { code: number }).code, 2);
    assert.match((result as { stderr: string }).stderr, /client registry error: .*entry 0 \(client_id "ok"\): purpose "SNOOP"/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reloads the file when it changes, and keeps the old clients when the new file is bad', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-reg-'));
    const file = path.join(dir, 'clients.json');
    fs.writeFileSync(file, JSON.stringify([good]));
    const registry = ClientRegistry.load(file);
    assert.ok(registry.get('ok'));
    fs.writeFileSync(file, JSON.stringify([{ ...good, client_id: 'renamed' }]));
    assert.deepEqual(registry.reload(), { ok: true, count: 1 });
    assert.equal(registry.get('ok'), undefined);
    assert.ok(registry.get('renamed'));
    fs.writeFileSync(file, '[{"client_id": ');
    const bad = registry.reload();
    assert.equal(bad.ok, false);
    assert.ok(registry.get('renamed'), 'the previous clients stay in force');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('the newcomer path', () => {
    it('creates demo clients and keys on a first start; npm run token gets a working token', async () => {
      const db = await freshDatabase();
      const server = await startServer({ DATABASE_URL: db.url });
      try {
        assert.match(server.output(), /three demo clients/);
        const registry = JSON.parse(fs.readFileSync(path.join(server.dataDir, 'clients.json'), 'utf8')) as { client_id: string; roles?: string[] }[];
        assert.deepEqual(registry.map((c) => c.client_id), ['demo-gp', 'demo-hospital', 'demo-national']);
        assert.deepEqual(registry[2].roles, ['national-service']);
        for (const c of registry) {
          const key = fs.statSync(path.join(server.dataDir, 'keys', `${c.client_id}.private.jwk.json`));
          assert.equal(key.mode & 0o077, 0, 'private keys are readable by their owner only');
        }
        const { stdout, stderr } = await run(process.execPath, [TOKEN, '--client', 'demo-gp', '--base', server.baseUrl, '--data-dir', server.dataDir]);
        const token = stdout.trim();
        assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
        assert.match(stderr, /granted: system\/Patient.cruds/);
        const res = await fetch(`${server.baseUrl}/Patient`, { headers: { Authorization: `Bearer ${token}` } });
        assert.equal(res.status, 200);
        const national = await run(process.execPath, [TOKEN, '--client', 'demo-national', '--base', server.baseUrl, '--data-dir', server.dataDir, '--purpose', 'PUBHLTH']);
        assert.match(national.stderr, /granted: system\/Consent.rs system\/Patient.s/);
        // demo-national is not registered for TREAT: without --purpose it gets its first registered purpose.
        const nationalDefault = await run(process.execPath, [TOKEN, '--client', 'demo-national', '--base', server.baseUrl, '--data-dir', server.dataDir]);
        assert.deepEqual(decodeJwt(nationalDefault.stdout.trim()).purpose_of_use, ['HOPERAT']);
        const consents = await fetch(`${server.baseUrl}/Consent`, { headers: { Authorization: `Bearer ${nationalDefault.stdout.trim()}` } });
        assert.equal(consents.status, 200);
        // Tokens name the address the server listens at, not the Host the client used.
        assert.equal(decodeJwt(token).aud, server.baseUrl);
        const otherHost = await new Promise<number>((resolve, reject) => {
          const req = http.get(`${server.baseUrl}/Patient`, { headers: { Authorization: `Bearer ${token}`, Host: 'localhost:1', 'X-Forwarded-Host': 'proxy.example' } }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          });
          req.on('error', reject);
        });
        assert.equal(otherHost, 200, 'whatever Host the request names');
        const refused = await run(process.execPath, [TOKEN, '--client', 'demo-national', '--base', server.baseUrl, '--data-dir', server.dataDir, '--purpose', 'TREAT']).catch((e: { code: number; stderr: string }) => e);
        assert.equal((refused as { code: number }).code, 1);
        assert.match((refused as { stderr: string }).stderr, /invalid_scope/);
        // the same flow as a library (what the end-to-end suites use)
        const { client_id: _c, ...privateJwk } = JSON.parse(fs.readFileSync(path.join(server.dataDir, 'keys', 'demo-hospital.private.jwk.json'), 'utf8'));
        const t = await fetchToken({ base: server.baseUrl, clientId: 'demo-hospital', privateJwk, scope: 'system/Patient.rs', purpose: 'BTG' });
        assert.equal(t.scope, 'system/Patient.rs');
      } finally {
        await server.stop('SIGTERM');
        await db.drop();
      }
    });
  });
});
