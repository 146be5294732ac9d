import assert from 'node:assert/strict';
import { createPatients, GP_AND_AUDITOR, processFixture, startServer, type ProcessFixture, type ServerProcess } from '../support/server-process';

/**
 * Graceful shutdown under load: on SIGTERM the server stops accepting connections, finishes
 * every request already begun (including committing its AuditEvents, also for clients that hung
 * up) and only then closes the database. Every response a client gets is a 200 whose
 * AuditEvent is durable; the alternative is a refused or closed connection, never a 503 or a
 * 500 caused by the shutdown.
 */
describe('End to end: SIGTERM under load finishes what it began', function () {
  this.timeout(120000);
  let fx: ProcessFixture;
  let env: Record<string, string>;
  let server: ServerProcess | undefined;

  before(async () => {
    fx = await processFixture(GP_AND_AUDITOR, 'custodian-term-');
    env = fx.env;
    server = await startServer(env);
  });
  after(async () => {
    await server?.stop('SIGKILL');
    await fx.cleanup();
  });

  const token = (base: string, clientId: string, scope: string, purpose?: string) => fx.token(base, clientId, scope, purpose);

  it('every answer is a 200 with its AuditEvent on the trail, or the connection is refused', async () => {
    const base = server!.baseUrl;
    const gp = await token(base, 'gp', 'system/Patient.cruds');
    const ids = await createPatients(base, gp, 10, 'Term');
    const answered: { requestId: string; status: number; body: string }[] = [];
    let n = 0;
    let refused = 0;
    const deadline = Date.now() + 30000;
    // Reads and writes; some clients hang up early, leaving requests (and audit commits) in flight.
    const client = async (k: number) => {
      for (;;) {
        const requestId = `term-${k}-${++n}`;
        const impatient = k % 8 === 7 ? AbortSignal.timeout(2 + (n % 20)) : undefined;
        const write = k % 4 === 1;
        try {
          const res = await fetch(write ? `${base}/Patient` : `${base}/Patient/${ids[n % ids.length]}`, {
            method: write ? 'POST' : 'GET',
            headers: { Authorization: `Bearer ${gp}`, 'X-Request-Id': requestId, ...(write ? { 'Content-Type': 'application/fhir+json' } : {}) },
            body: write ? JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Busy' }] }) : undefined,
            signal: impatient,
          });
          answered.push({ requestId, status: res.status, body: (await res.text()).slice(0, 300) });
        } catch (err) {
          if ((err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError') continue;
          refused++; // the server stopped listening (or closed the connection): the expected end
          return;
        }
        if (Date.now() > deadline) return;
      }
    };
    const clients = Array.from({ length: 16 }, (_, k) => client(k));
    await new Promise((r) => setTimeout(r, 3000));
    const beforeStop = answered.length;
    const exitCode = await server!.stop('SIGTERM');
    await Promise.all(clients);
    const output = server!.output();
    server = undefined;

    assert.ok(beforeStop > 50, `load ran (${beforeStop} answers before SIGTERM, ${answered.length} in all)`);
    assert.ok(refused > 0, 'the clients were turned away in the end');
    const failed = answered.filter((a) => a.status !== 200 && a.status !== 201);
    assert.deepEqual(failed, [], 'no request begun before the shutdown failed because of it');
    assert.doesNotMatch(output, /audit write failed|SQLITE_MISUSE|Database handle is closed|shutdown timed out/);
    assert.equal(exitCode, 0, output.slice(-2000));

    server = await startServer(env);
    const auditor = await token(server.baseUrl, 'auditor', 'system/AuditEvent.rs', 'HOPERAT');
    const found = new Set<string>();
    const wanted = answered.map((a) => a.requestId);
    for (let i = 0; i < wanted.length; i += 50) {
      const batch = wanted.slice(i, i + 50);
      const res = await fetch(`${server.baseUrl}/AuditEvent?entity:identifier=${batch.join(',')}&_count=1000`, { headers: { Authorization: `Bearer ${auditor}` } });
      const bundle = (await res.json()) as { entry?: { resource: { entity: { what?: { identifier?: { value: string } } }[] } }[] };
      for (const e of bundle.entry ?? []) for (const x of e.resource.entity) if (x.what?.identifier?.value?.startsWith('term-')) found.add(x.what.identifier.value);
    }
    const missing = wanted.filter((id) => !found.has(id));
    assert.deepEqual(missing, [], `${missing.length} of ${wanted.length} answered requests have no AuditEvent`);
    const verify = (await (await fetch(`${server.baseUrl}/AuditEvent/$verify`, { headers: { Authorization: `Bearer ${auditor}` } })).json()) as { parameter: { name: string; valueBoolean?: boolean }[] };
    assert.equal(verify.parameter.find((p) => p.name === 'intact')!.valueBoolean, true, JSON.stringify(verify));
  });
});
