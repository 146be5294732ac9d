import assert from 'node:assert/strict';
import type { AuditEvent } from 'fhir/r4';
import { ConfigError, loadConfig } from '../../server/config';
import type { Api } from '../support/api';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

/**
 * The client's network address in the audit trail behind a reverse proxy: X-Forwarded-For counts
 * only when the connection comes from a proxy named in CUSTODIAN_TRUST_PROXY, and then only the
 * address the trusted proxy saw (what the client itself put in the header is not believed).
 * Requests in these tests arrive over loopback.
 */
describe('Audit: the client address, behind a trusted proxy or not', () => {
  const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
  let n = 0;

  async function addressesFor(env: Record<string, string>, forwardedFor: string | undefined): Promise<{ read: string[]; refused: string[] }> {
    const h: Harness = await startHarness({
      env,
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds'], purposes: ['TREAT'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
      ],
    });
    try {
      const gp: Api = await h.as('gp');
      const auditor = await h.as('auditor', { purpose: 'HOPERAT' });
      const pid = (await gp.post('/Patient', patient({ managingOrganization: { identifier: { system: ODS, value: 'GP1' } } }))).body.id;
      const headers = (id: string) => ({ 'X-Request-Id': id, ...(forwardedFor ? { 'X-Forwarded-For': forwardedFor } : {}) });
      const readId = `addr-read-${++n}`;
      assert.equal((await gp.get(`/Patient/${pid}`, headers(readId))).status, 200);
      const refusedId = `addr-401-${n}`;
      assert.equal((await h.anonymous.get(`/Patient/${pid}`, headers(refusedId))).status, 401);
      const of = async (id: string) => {
        const res = await auditor.get(`/AuditEvent?entity:identifier=${id}&_count=100`);
        assert.equal(res.status, 200);
        const events = (res.body.entry ?? []).map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
        assert.ok(events.length > 0, `the request ${id} was audited`);
        return events.flatMap((e) => e.agent.filter((a) => a.network?.type === '2').map((a) => a.network!.address!));
      };
      return { read: await of(readId), refused: await of(refusedId) };
    } finally {
      await h.close();
    }
  }
  const loopback = (a: string) => ['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(a);

  it('by default the address is the connection\'s peer, whatever X-Forwarded-For says', async () => {
    const { read, refused } = await addressesFor({}, '203.0.113.7');
    for (const a of [...read, ...refused]) assert.ok(loopback(a), a);
  });

  it('behind a trusted proxy it is the address the proxy saw, for permitted and refused requests alike', async () => {
    const { read, refused } = await addressesFor({ CUSTODIAN_TRUST_PROXY: 'loopback' }, '203.0.113.7');
    assert.deepEqual([...new Set([...read, ...refused])], ['203.0.113.7']);
  });

  it('an address the client put in X-Forwarded-For itself is not believed: the trusted proxy appends the one it saw', async () => {
    const { read } = await addressesFor({ CUSTODIAN_TRUST_PROXY: '127.0.0.1, ::1' }, '10.9.9.9, 203.0.113.7');
    assert.deepEqual([...new Set(read)], ['203.0.113.7']);
  });

  it('a forwarded value that is not an IP address (a hop inside a trusted range can write anything) is not recorded: the peer is', async () => {
    const { read } = await addressesFor({ CUSTODIAN_TRUST_PROXY: 'loopback' }, 'garbage');
    for (const a of read) assert.ok(loopback(a), a);
  });

  it('a peer that is not a named proxy gets no say', async () => {
    const { read } = await addressesFor({ CUSTODIAN_TRUST_PROXY: '10.0.0.0/8' }, '203.0.113.7');
    for (const a of read) assert.ok(loopback(a), a);
  });

  it('refuses a CUSTODIAN_TRUST_PROXY that is not addresses, ranges or keywords', () => {
    for (const bad of ['proxy.example', '10.0.0.0/33', '300.1.1.1', 'fe80::/129', '10.0.0.1/8/8', 'true', '0.0.0.0/0', '::/0', '10.0.0.1/000', '::ffff:10.0.0.0/8', '::ffff:10.0.0.1', '0:0:0:0:0:ffff:10.0.0.0/8', '0::ffff:a00:0/104']) {
      assert.throws(() => loadConfig({ CUSTODIAN_TRUST_PROXY: bad }, '/tmp'), (err: unknown) => err instanceof ConfigError && /CUSTODIAN_TRUST_PROXY/.test(err.message), bad);
    }
    assert.deepEqual(loadConfig({ CUSTODIAN_TRUST_PROXY: 'loopback, 10.0.0.0/8 2001:db8::/32' }, '/tmp').trustProxy, ['loopback', '10.0.0.0/8', '2001:db8::/32']);
    // A zone id, and an IPv4-translated (not mapped) address, are addresses proxy-addr takes as they are.
    for (const ok of ['fe80::1%eth0', '::ffff:0:10.0.0.1']) assert.deepEqual(loadConfig({ CUSTODIAN_TRUST_PROXY: ok }, '/tmp').trustProxy, [ok]);
  });
});
