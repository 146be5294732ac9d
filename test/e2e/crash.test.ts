import assert from 'node:assert/strict';
import { createPatients, GP_AND_AUDITOR, processFixture, startServer, type ProcessFixture, type ServerProcess } from '../support/server-process';

/**
 * Durable before the response: under read load the server is killed (SIGKILL, no shutdown);
 * after a restart every request that got a 200 has its AuditEvent, and the chain is intact.
 */
describe('End to end: killed under load, no 200 is missing from the audit trail', function () {
  this.timeout(90000);
  let fx: ProcessFixture;
  let env: Record<string, string>;
  let server: ServerProcess;

  before(async () => {
    fx = await processFixture(GP_AND_AUDITOR, 'custodian-crash-');
    env = fx.env;
    server = await startServer(env);
  });
  after(async () => {
    await server?.stop('SIGKILL');
    await fx.cleanup();
  });

  const token = (base: string, clientId: string, scope: string, purpose?: string) => fx.token(base, clientId, scope, purpose);

  it('every 200 has its AuditEvent after a SIGKILL and a restart, and $verify passes', async () => {
    const gp = await token(server.baseUrl, 'gp', 'system/Patient.cruds');
    const ids = await createPatients(server.baseUrl, gp, 20, 'Crash');
    const ok: string[] = [];
    let n = 0;
    let stop = false;
    const worker = async () => {
      while (!stop) {
        const requestId = `crash-${++n}`;
        try {
          const res = await fetch(`${server.baseUrl}/Patient/${ids[n % ids.length]}`, { headers: { Authorization: `Bearer ${gp}`, 'X-Request-Id': requestId } });
          if (res.status === 200) {
            await res.arrayBuffer();
            ok.push(requestId);
          }
        } catch {
          /* the server died under us */
        }
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    await new Promise((r) => setTimeout(r, 1500));
    const killed = server.stop('SIGKILL');
    await killed;
    stop = true;
    await Promise.all(workers);
    assert.ok(ok.length > 50, `load ran (${ok.length} reads answered)`);

    server = await startServer(env);
    const auditor = await token(server.baseUrl, 'auditor', 'system/AuditEvent.rs', 'HOPERAT');
    const found = new Set<string>();
    for (let i = 0; i < ok.length; i += 50) {
      const batch = ok.slice(i, i + 50);
      const res = await fetch(`${server.baseUrl}/AuditEvent?entity:identifier=${batch.join(',')}&_count=1000`, { headers: { Authorization: `Bearer ${auditor}` } });
      const bundle = (await res.json()) as { entry?: { resource: { entity: { what?: { identifier?: { value: string } } }[] } }[] };
      for (const e of bundle.entry ?? []) for (const x of e.resource.entity) if (x.what?.identifier?.value?.startsWith('crash-')) found.add(x.what.identifier.value);
    }
    const missing = ok.filter((id) => !found.has(id));
    assert.deepEqual(missing, [], `${missing.length} of ${ok.length} answered reads have no AuditEvent`);
    const verify = (await (await fetch(`${server.baseUrl}/AuditEvent/$verify`, { headers: { Authorization: `Bearer ${auditor}` } })).json()) as { parameter: { name: string; valueBoolean?: boolean }[] };
    assert.equal(verify.parameter.find((p) => p.name === 'intact')!.valueBoolean, true, JSON.stringify(verify));
  });
});
