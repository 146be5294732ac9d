import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fetchToken } from '../../scripts/token';
import { makeClients } from '../support/auth';
import { freshDatabase, type TestDatabase } from '../support/db';
import { startServer, type ServerProcess } from '../support/server-process';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Two server processes on one database, as behind a load balancer: a Consent withdrawn through
 * one is enforced by the other on its very next request, though that one had just decided (and
 * cached) a permit.
 */
describe('End to end: a Consent change reaches every server process at once', function () {
  this.timeout(60000);
  let db: TestDatabase;
  let a: ServerProcess;
  let b: ServerProcess;
  let dir: string;
  const tokens: Record<string, string> = {};

  before(async () => {
    db = await freshDatabase();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-2p-'));
    const { clients, json } = await makeClients([
      { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
      { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.rs'], purposes: ['TREAT'] },
      { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
    ]);
    fs.writeFileSync(path.join(dir, 'clients.json'), JSON.stringify(json));
    const portA = await freePort();
    const base = `http://127.0.0.1:${portA}`;
    const shared = { DATABASE_URL: db.url, CUSTODIAN_CLIENTS: path.join(dir, 'clients.json'), CUSTODIAN_SIGNING_KEY: path.join(dir, 'signing.json'), CUSTODIAN_BASE_URL: base };
    a = await startServer({ ...shared, PORT: String(portA), CUSTODIAN_DATA_DIR: path.join(dir, 'a') });
    b = await startServer({ ...shared, CUSTODIAN_DATA_DIR: path.join(dir, 'b') });
    assert.notEqual(b.baseUrl, a.baseUrl, 'two processes, two addresses');
    for (const id of ['gp', 'hospital', 'auditor']) {
      const c = clients.get(id)!;
      tokens[id] = (await fetchToken({ base, clientId: id, privateJwk: c.privateJwk, scope: (c.entry.scopes as string[]).join(' '), purpose: (c.entry.purposes as string[])[0] })).access_token;
    }
  });
  after(async () => {
    await a?.stop('SIGKILL');
    await b?.stop('SIGKILL');
    await db.drop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function call(server: ServerProcess, client: string, method: string, urlPath: string, body?: unknown) {
    // Each process is called at its own address (both are configured with A's public base URL).
    const res = await fetch(`${server.baseUrl}${urlPath}`, {
      method,
      headers: { Authorization: `Bearer ${tokens[client]}`, ...(body ? { 'Content-Type': 'application/fhir+json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: (await res.json().catch(() => undefined)) as Record<string, unknown> & { id: string } };
  }

  it('withdrawn through process A, refused by process B on the next request', async () => {
    const patient = await call(a, 'gp', 'POST', '/Patient', { resourceType: 'Patient', name: [{ family: 'Twoproc' }], managingOrganization: { identifier: { system: 'https://fhir.nhs.uk/Id/ods-organization-code', value: 'GP1' } } });
    assert.equal(patient.status, 201);
    const consent = {
      resourceType: 'Consent',
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { reference: `Patient/${patient.body.id}` },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision: { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: { identifier: { system: 'https://fhir.nhs.uk/Id/ods-organization-code', value: 'HOSP1' } } }] },
    };
    const created = await call(a, 'gp', 'POST', '/Consent', consent);
    assert.equal(created.status, 201);
    // B decides (and caches) a permit
    for (let i = 0; i < 3; i++) assert.equal((await call(b, 'hospital', 'GET', `/Patient/${patient.body.id}`)).status, 200);
    // A withdraws it; B's very next request is refused
    const withdrawn = await call(a, 'gp', 'PUT', `/Consent/${created.body.id}`, { ...consent, id: created.body.id, status: 'inactive' });
    assert.equal(withdrawn.status, 200);
    assert.equal((await call(b, 'hospital', 'GET', `/Patient/${patient.body.id}`)).status, 403);
    const search = await call(b, 'hospital', 'GET', `/Patient?_id=${patient.body.id}&_total=accurate`);
    assert.equal(search.body.total, 0);
    // and given again through A, permitted again by B at once
    assert.equal((await call(a, 'gp', 'PUT', `/Consent/${created.body.id}`, { ...consent, id: created.body.id, status: 'active' })).status, 200);
    assert.equal((await call(b, 'hospital', 'GET', `/Patient/${patient.body.id}`)).status, 200);
  });

  it('a search cursor issued by one process pages on the other (they share the cursor key)', async () => {
    for (let i = 0; i < 3; i++) {
      assert.equal((await call(a, 'gp', 'POST', '/Patient', { resourceType: 'Patient', name: [{ family: `Pager${i}` }], managingOrganization: { identifier: { system: 'https://fhir.nhs.uk/Id/ods-organization-code', value: 'GP1' } } })).status, 201);
    }
    const first = await call(a, 'gp', 'GET', '/Patient?family=Pager&_sort=family&_count=2');
    const next = (first.body.link as { relation: string; url: string }[]).find((l) => l.relation === 'next')!.url;
    const second = await call(b, 'gp', 'GET', next.slice(next.indexOf('/Patient')));
    assert.equal(second.status, 200);
    assert.deepEqual((second.body.entry as { resource: { name: { family: string }[] } }[]).map((e) => e.resource.name[0].family), ['Pager2']);
  });

  it('both processes extend one audit chain, which verifies intact', async () => {
    const reads = await Promise.all(
      Array.from({ length: 60 }, (_, i) => call(i % 2 ? a : b, 'gp', 'GET', '/Patient?_count=5')),
    );
    assert.ok(reads.every((r) => r.status === 200));
    const verify = await call(a, 'auditor', 'GET', '/AuditEvent/$verify');
    const p = Object.fromEntries((verify.body.parameter as { name: string; valueBoolean?: boolean; valueInteger?: number }[]).map((x) => [x.name, x.valueBoolean ?? x.valueInteger]));
    assert.equal(p.intact, true, JSON.stringify(verify.body));
    assert.ok((p.links as number) >= 60);
  });
});
