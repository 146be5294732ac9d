import assert from 'node:assert/strict';
import type { Bundle, Patient } from 'fhir/r4';
import { freshDatabase, type TestDatabase } from '../support/db';
import { assertValidFhir } from '../support/api';
import { patient } from '../support/fixtures';
import { startServer, type ServerProcess } from '../support/server-process';
import fs from 'node:fs';
import path from 'node:path';
import { fetchToken } from '../../scripts/token';

import type { Client } from 'fhir-kit-client' with { 'resolution-mode': 'import' };

/**
 * End to end: the real server process on an ephemeral port, driven by fhir-kit-client, a FHIR
 * client we did not write.
 */
describe('End to end: the server process with fhir-kit-client', function () {
  this.timeout(60000);
  let db: TestDatabase;
  let server: ServerProcess;
  let client: Client;

  before(async () => {
    db = await freshDatabase();
    server = await startServer({ DATABASE_URL: db.url });
    // The demo GP practice the server registered on its first start, through the real token flow.
    const { client_id: _c, ...privateJwk } = JSON.parse(fs.readFileSync(path.join(server.dataDir, 'keys', 'demo-gp.private.jwk.json'), 'utf8'));
    const token = await fetchToken({ base: server.baseUrl, clientId: 'demo-gp', privateJwk, scope: 'system/Patient.cruds system/Consent.cruds' });
    const { Client } = await import('fhir-kit-client');
    client = new Client({ baseUrl: server.baseUrl, bearerToken: token.access_token });
  });
  after(async () => {
    await server.stop('SIGKILL');
    await db.drop();
  });

  const check = <T>(r: unknown): T => {
    assertValidFhir(r, 'fhir-kit-client');
    return r as T;
  };

  it('creates, reads, updates, vreads, searches, lists history and deletes', async () => {
    const created = check<Patient>(await client.create({ resourceType: 'Patient', body: patient({ identifier: [{ system: 'urn:e2e', value: '1' }] }) as never }));
    assert.ok(created.id);
    const read = check<Patient>(await client.read({ resourceType: 'Patient', id: created.id! }));
    assert.equal(read.name![0].family, 'Smith');
    const updated = check<Patient>(await client.update({ resourceType: 'Patient', id: created.id!, body: { ...read, gender: 'female' } as never }));
    assert.equal(updated.meta!.versionId, '2');
    const v1 = check<Patient>(await client.vread({ resourceType: 'Patient', id: created.id!, version: '1' }));
    assert.equal(v1.gender, undefined);
    const found = check<Bundle>(await client.search({ resourceType: 'Patient', searchParams: { identifier: 'urn:e2e|1' } }));
    assert.equal(found.entry![0].resource!.id, created.id);
    const history = check<Bundle>(await client.history({ resourceType: 'Patient', id: created.id! }));
    assert.equal(history.entry!.length, 2);
    const patched = check<Patient>(await client.patch({ resourceType: 'Patient', id: created.id!, jsonPatch: [{ op: 'replace', path: '/gender', value: 'male' }] }));
    assert.equal(patched.gender, 'male');
    await client.delete({ resourceType: 'Patient', id: created.id! });
    await assert.rejects(client.read({ resourceType: 'Patient', id: created.id! }), (err: { response?: { status: number } }) => err.response?.status === 410);
  });

  it('pages through search results with nextPage', async () => {
    for (let i = 0; i < 5; i++) await client.create({ resourceType: 'Patient', body: patient({ identifier: [{ system: 'urn:e2e:page', value: String(i) }] }) as never });
    let bundle = check<Bundle>(await client.search({ resourceType: 'Patient', searchParams: { identifier: 'urn:e2e:page|', _count: 2 } }));
    let seen = bundle.entry!.length;
    for (;;) {
      const next = client.nextPage({ bundle: bundle as never });
      if (!next) break;
      bundle = check<Bundle>(await next);
      seen += bundle.entry?.length ?? 0;
    }
    assert.equal(seen, 5);
  });

  it('runs a transaction and reads the CapabilityStatement', async () => {
    const result = check<Bundle>(
      await client.transaction({
        body: { resourceType: 'Bundle', type: 'transaction', entry: [{ fullUrl: 'urn:uuid:aaaaaaaa-0000-4000-8000-000000000001', resource: patient() as never, request: { method: 'POST', url: 'Patient' } }] },
      }),
    );
    assert.equal(result.type, 'transaction-response');
    const cs = check<{ fhirVersion: string }>(await client.capabilityStatement());
    assert.equal(cs.fhirVersion, '4.0.1');
  });

  it('refuses the same client without a token (401)', async () => {
    const { Client } = await import('fhir-kit-client');
    const anonymous = new Client({ baseUrl: server.baseUrl });
    await assert.rejects(anonymous.search({ resourceType: 'Patient' }), (err: { response?: { status: number } }) => err.response?.status === 401);
    await assert.rejects(anonymous.create({ resourceType: 'Patient', body: patient() as never }), (err: { response?: { status: number } }) => err.response?.status === 401);
    assert.equal((await anonymous.capabilityStatement() as { resourceType: string }).resourceType, 'CapabilityStatement', '/metadata stays public');
  });

  it('shuts down gracefully on SIGTERM', async () => {
    const code = await server.stop('SIGTERM');
    assert.equal(code, 0, server.output());
  });
});
