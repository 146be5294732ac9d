import assert from 'node:assert/strict';
import type { AuditEvent } from 'fhir/r4';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';
import { requestLog } from '../../server/http/pipeline';
import { sharedValidator } from '../../server/validation/validate';
import type { Api } from '../support/api';
import { assertValidFhir } from '../support/api';
import { consent, loadJson, patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
const org = (code: string) => ({ identifier: { system: ODS, value: code } });
const BASE = 'http://custodian.test/fhir';
const IDP = 'https://idp.example';

/** The parts of an AuditEvent BALP fixes: codes, not values. */
function shape(e: AuditEvent) {
  return {
    type: `${e.type.system}|${e.type.code}`,
    subtype: (e.subtype ?? []).map((s) => s.code).sort(),
    action: e.action,
    agents: e.agent.map((a) => a.type?.coding?.[0]?.code).sort(),
    entities: (e.entity ?? []).map((x) => `${x.type?.code}/${x.role?.code ?? '-'}`).sort(),
  };
}
const balp = (name: string) => loadJson<AuditEvent>('ihe', 'balp', 'json', 'instances', `AuditEvent-ex-${name}.json`);
const includes = (ours: string[], theirs: string[]) => theirs.every((t) => ours.includes(t));

describe('Audit: a BALP AuditEvent for every access', () => {
  let h: Harness;
  let gp: Api;
  let hospital: Api;
  let btg: Api;
  let auditor: Api;
  let idpKey: KeyLike;
  let alice: string;
  let bob: string;
  let hidden: string;
  let n = 0;
  const rid = () => `audit-test-${++n}`;

  before(async () => {
    const pair = await generateKeyPair('ES256');
    idpKey = pair.privateKey;
    h = await startHarness({
      clients: [
        { clientId: 'gp', ods: 'GP1', scopes: ['system/Patient.cruds', 'system/Consent.cruds'], purposes: ['TREAT'] },
        { clientId: 'hospital', ods: 'HOSP1', scopes: ['system/Patient.rs', 'system/Consent.rs'], purposes: ['TREAT', 'BTG'] },
        { clientId: 'auditor', ods: 'AUD1', scopes: ['system/AuditEvent.rs'], purposes: ['HOPERAT'], roles: ['auditor'] },
        { clientId: 'ehr-audit', ods: 'HOSP1', scopes: ['system/AuditEvent.c'], purposes: ['HOPERAT'], roles: ['audit-source'] },
      ],
      trusted: [{ issuer: IDP, keys: createLocalJWKSet({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k', alg: 'ES256' }] }), algorithms: ['ES256'], purposes: ['TREAT', 'PATRQT'] }],
    });
    gp = await h.as('gp');
    hospital = await h.as('hospital');
    btg = await h.as('hospital', { purpose: 'BTG' });
    auditor = await h.as('auditor', { purpose: 'HOPERAT' });
    const mk = async (family: string) => (await gp.post('/Patient', patient({ name: [{ family }], managingOrganization: org('GP1') }))).body.id as string;
    alice = await mk('Alice');
    bob = await mk('Bob');
    hidden = await mk('Hidden');
    for (const p of [alice, bob]) {
      await gp.post('/Consent', consent(p, { provision: { type: 'permit', actor: [{ role: { text: 'r' }, reference: org('HOSP1') }] } }));
    }
  });
  after(() => h.close());

  /** The AuditEvents recorded for one request, found by its X-Request-Id. */
  async function eventsOf(requestId: string): Promise<AuditEvent[]> {
    const res = await auditor.get(`/AuditEvent?entity:identifier=${requestId}&_count=100`);
    assert.equal(res.status, 200);
    const events = (res.body.entry ?? []).map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
    for (const e of events) {
      assertValidFhir(e, `AuditEvent of ${requestId}`);
      const report = sharedValidator().report('AuditEvent', e);
      assert.deepEqual([...report.base, ...report.profile], [], `AuditEvent of ${requestId} breaks the Custodian profile`);
    }
    return events;
  }
  const rest = (events: AuditEvent[]) => events.filter((e) => e.type.code === 'rest');
  const authz = (events: AuditEvent[]) => events.filter((e) => e.subtype?.some((s) => s.code === 'AuthZ-Consent'));
  const patientOf = (e: AuditEvent) => e.entity?.find((x) => x.role?.code === '1')?.what?.reference;

  it('a read: one PatientRead event with BALP\'s agents and entities, and an AuthZconsent event for the Consent that permitted it', async () => {
    const id = rid();
    assert.equal((await hospital.get(`/Patient/${alice}`, { 'X-Request-Id': id })).status, 200);
    const events = await eventsOf(id);
    assert.equal(events.length, 2);
    const [read] = rest(events);
    const example = shape(balp('auditBasicReadServer'));
    const ours = shape(read);
    assert.equal(ours.type, example.type);
    assert.deepEqual(ours.subtype, ['read']);
    assert.equal(ours.action, 'R');
    assert.equal(read.outcome, '0');
    // BALP's read has client (110152), server (110153) and, with a user, IRCP; ours adds the organisation (PROV).
    assert.ok(includes(ours.agents as string[], ['110152', '110153']), JSON.stringify(ours.agents));
    assert.ok(ours.agents.includes('PROV'));
    assert.ok(includes(ours.entities, example.entities.filter((e) => e !== '2/4' || true)), `${ours.entities} vs ${example.entities}`);
    const client = read.agent.find((a) => a.requestor)!;
    assert.equal(client.who?.identifier?.value, 'hospital');
    assert.equal(client.purposeOfUse?.[0].coding?.[0].code, 'TREAT');
    assert.equal(read.agent.find((a) => a.type?.coding?.[0].code === 'PROV')!.who?.identifier?.value, 'HOSP1');
    assert.equal(patientOf(read), `Patient/${alice}`);
    assert.ok(read.entity!.some((x) => x.what?.reference === `Patient/${alice}/_history/1`), 'the version read');
    assert.ok(read.entity!.some((x) => x.type?.code === 'XrequestId' && x.what?.identifier?.value === id));
    const [decision] = authz(events);
    const exampleAuthz = shape(balp('auditAuthZconsent'));
    assert.equal(shape(decision).type, exampleAuthz.type);
    assert.deepEqual(shape(decision).subtype, exampleAuthz.subtype);
    assert.ok(includes(shape(decision).agents as string[], exampleAuthz.agents as string[]), JSON.stringify(shape(decision).agents));
    assert.equal(decision.outcome, '0');
    assert.ok(decision.entity!.some((x) => x.type?.code === 'Consent' && x.what?.reference?.startsWith('Consent/')));
    assert.ok(decision.entity!.some((x) => x.type?.code === 'UserOauthAgent'), 'the access token\'s jti');
  });

  it('a refused read: outcome 8 with the reason, and the patient\'s trail records the attempt', async () => {
    const id = rid();
    assert.equal((await hospital.get(`/Patient/${hidden}`, { 'X-Request-Id': id })).status, 403);
    const [event, ...others] = await eventsOf(id);
    assert.equal(others.length, 0, 'no Consent decided (the default did): no AuthZconsent event');
    assert.equal(event.outcome, '8');
    assert.match(event.outcomeDesc!, /no-consent/);
    assert.equal(patientOf(event), `Patient/${hidden}`);
  });

  it('break the glass: the event carries the BTG purpose of event', async () => {
    const id = rid();
    assert.equal((await btg.get(`/Patient/${hidden}`, { 'X-Request-Id': id })).status, 200);
    const [event] = rest(await eventsOf(id));
    assert.equal(event.outcome, '0');
    assert.equal(event.purposeOfEvent?.[0].coding?.[0].code, 'BTG');
    assert.equal(event.agent.find((a) => a.requestor)!.purposeOfUse?.[0].coding?.[0].code, 'BTG');
  });

  it('a search across patients: one PatientQuery event per patient, with the query (base64 of the request)', async () => {
    const id = rid();
    const res = await hospital.get('/Patient?_count=10', { 'X-Request-Id': id });
    assert.equal(res.body.entry.length, 2);
    const events = rest(await eventsOf(id));
    assert.deepEqual(events.map(patientOf).sort(), [`Patient/${alice}`, `Patient/${bob}`].sort());
    const example = shape(balp('auditBasicQueryGetServer'));
    for (const e of events) {
      assert.equal(e.action, 'E');
      assert.deepEqual(shape(e).subtype, ['search-type']);
      assert.ok(includes(shape(e).agents as string[], ['110153', '110152']));
      assert.ok(includes(shape(e).entities, example.entities), `${shape(e).entities} vs ${example.entities}`);
      const query = e.entity!.find((x) => x.role?.code === '24')!;
      assert.equal(Buffer.from(query.query!, 'base64').toString(), query.description);
      assert.match(query.description!, new RegExp(`^GET ${BASE}/Patient\\?_count=10\\nAccept: .*\\nX-Request-Id: ${id}$`));
    }
  });

  it('a search that returns nothing: one event without a patient', async () => {
    const id = rid();
    await hospital.get('/Patient?family=Nobody', { 'X-Request-Id': id });
    const events = await eventsOf(id);
    assert.equal(events.length, 1);
    assert.equal(patientOf(events[0]), undefined);
  });

  it('create, update, patch and delete: C, U, U, D with the version written', async () => {
    const created = await gp.post('/Patient', patient({ managingOrganization: org('GP1') }), { 'X-Request-Id': 'audit-create' });
    const pid = created.body.id;
    await gp.put(`/Patient/${pid}`, patient({ id: pid, managingOrganization: org('GP1'), active: true }), { 'X-Request-Id': 'audit-update' });
    await gp.request('patch', `/Patient/${pid}`, { body: [{ op: 'add', path: '/gender', value: 'other' }], contentType: 'application/json-patch+json', headers: { 'X-Request-Id': 'audit-patch' } });
    await gp.delete(`/Patient/${pid}`, { 'X-Request-Id': 'audit-delete' });
    const expected: [string, string, string, string][] = [
      ['audit-create', 'C', 'create', `Patient/${pid}/_history/1`],
      ['audit-update', 'U', 'update', `Patient/${pid}/_history/2`],
      ['audit-patch', 'U', 'patch', `Patient/${pid}/_history/3`],
      ['audit-delete', 'D', 'delete', `Patient/${pid}/_history/4`],
    ];
    const createExample = shape(balp('auditBasicCreateServer'));
    for (const [id, action, subtype, version] of expected) {
      const [e, ...rest2] = await eventsOf(id);
      assert.equal(rest2.length, 0, id);
      assert.equal(e.action, action, id);
      assert.deepEqual(shape(e).subtype, [subtype]);
      assert.equal(patientOf(e), `Patient/${pid}`, id);
      assert.ok(e.entity!.some((x) => x.what?.reference === version), `${id}: ${JSON.stringify(e.entity)}`);
      assert.ok(includes(shape(e).agents as string[], createExample.agents.filter((a) => a !== 'AUT') as string[]), `${id}: ${shape(e).agents} vs ${createExample.agents}`);
    }
  });

  it('a 401 is audited with whatever identity was presented', async () => {
    const res = await h.anonymous.get(`/Patient/${alice}`, { 'X-Request-Id': 'audit-401' });
    assert.equal(res.status, 401);
    const [e] = await eventsOf('audit-401');
    assert.equal(e.outcome, '8', 'a refused authentication is a serious failure, like a 403 (see outcomeOf)');
    assert.match(e.agent.find((a) => a.requestor)!.who!.display!, /no valid token/);
    const now = Math.floor(Date.now() / 1000);
    const stale = await new SignJWT({ client_id: 'hospital', jti: 'stale-jti' }).setProtectedHeader({ alg: 'ES256' }).setIssuer(BASE).setAudience(BASE).setExpirationTime(now - 10).sign(idpKey);
    await h.anonymous.get(`/Patient/${alice}`, { Authorization: `Bearer ${stale}`, 'X-Request-Id': 'audit-401b' });
    const [e2] = await eventsOf('audit-401b');
    assert.equal(e2.agent.find((a) => a.requestor)!.who!.identifier!.value, 'hospital');
    assert.match(e2.agent.find((a) => a.requestor)!.who!.display!, /unverified/);
  });

  it('404s, 405s and batches are audited too', async () => {
    await hospital.get('/Patient/no-such-one', { 'X-Request-Id': 'audit-404' });
    assert.equal((await eventsOf('audit-404'))[0].outcome, '4');
    await hospital.post('/', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Patient/${alice}` } }, { request: { method: 'GET', url: `Patient/${hidden}` } }] }, { 'X-Request-Id': 'audit-batch' });
    const events = rest(await eventsOf('audit-batch'));
    assert.deepEqual(events.map(patientOf).sort(), [`Patient/${alice}`, `Patient/${hidden}`].sort());
    assert.equal(events.find((e) => patientOf(e) === `Patient/${hidden}`)!.outcome, '8');
    assert.equal(events.find((e) => patientOf(e) === `Patient/${alice}`)!.outcome, '0');
  });

  it('reading the audit trail is itself audited', async () => {
    await auditor.get(`/AuditEvent?patient=${alice}`, { 'X-Request-Id': 'audit-of-audit' });
    const events = await eventsOf('audit-of-audit');
    assert.ok(events.length >= 1);
    assert.equal(events[0].agent.find((a) => a.requestor)!.who!.identifier!.value, 'auditor');
  });

  it('$verify (auditors only) finds the chain intact', async () => {
    const res = await auditor.get('/AuditEvent/$verify');
    assert.equal(res.status, 200);
    assert.equal(res.body.parameter.find((p: { name: string }) => p.name === 'intact').valueBoolean, true);
    assert.ok(res.body.parameter.find((p: { name: string }) => p.name === 'links').valueInteger > 10);
    assert.equal((await gp.get('/AuditEvent/$verify')).status, 403);
  });

  describe('audit sources', () => {
    it('post their own AuditEvents, which are validated, chained and searchable', async () => {
      const source = await h.as('ehr-audit', { purpose: 'HOPERAT' });
      const event = balp('auditBasicReadServer') as unknown as Record<string, unknown>;
      delete event.id;
      (event.entity as { what: { reference?: string } }[]).find((x) => x.what.reference?.startsWith('Patient/'))!.what.reference = `Patient/${alice}`;
      const created = await source.post('/AuditEvent', event);
      assert.equal(created.status, 201);
      const found = (await auditor.get(`/AuditEvent?_id=${created.body.id}`)).body;
      assert.equal(found.entry[0].resource.id, created.body.id);
      const verify = (await auditor.get('/AuditEvent/$verify')).body;
      assert.equal(verify.parameter[0].valueBoolean, true);
      const bad = await source.post('/AuditEvent', { ...event, recorded: undefined });
      assert.equal(bad.status, 400);
      assert.equal((await source.put(`/AuditEvent/${created.body.id}`, { ...event, id: created.body.id })).status, 405);
    });
  });

  describe('$access-report', () => {
    async function patientToken(pid: string): Promise<string> {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ iss: IDP, aud: BASE, exp: now + 300, client_id: 'patient-app', scope: 'patient/Patient.rs patient/AuditEvent.rs', patient: pid, purpose_of_use: 'PATRQT' })
        .setProtectedHeader({ alg: 'ES256', kid: 'k' })
        .sign(idpKey);
    }
    it('tells the patient who looked, from where, why, what they saw, and what was refused or break-the-glass', async () => {
      const res = await h.anonymous.get(`/Patient/${hidden}/$access-report`, { Authorization: `Bearer ${await patientToken(hidden)}` });
      assert.equal(res.status, 200);
      const lines = res.body.parameter.filter((p: { name: string }) => p.name === 'access');
      const parts = (l: { part: { name: string; valueCode?: string; valueBoolean?: boolean; valueReference?: { identifier?: { value: string } } }[] }) => Object.fromEntries(l.part.map((p) => [p.name, p.valueCode ?? p.valueBoolean ?? p.valueReference?.identifier?.value ?? p]));
      const refused = lines.map(parts).find((l: Record<string, unknown>) => l.outcome === 'refused' && l.client === 'hospital');
      assert.ok(refused, 'the refused attempt is in the report');
      const glass = lines.map(parts).find((l: Record<string, unknown>) => l.breakTheGlass === true);
      assert.ok(glass && glass.outcome === 'permitted' && glass.organization === 'HOSP1', 'the break-the-glass access is in the report');
    });
    it('is for the patient, the custodian and auditors only; reading it is audited', async () => {
      assert.equal((await gp.get(`/Patient/${hidden}/$access-report`)).status, 200);
      assert.equal((await auditor.get(`/Patient/${hidden}/$access-report`)).status, 200);
      assert.equal((await hospital.get(`/Patient/${hidden}/$access-report`)).status, 403);
      assert.equal((await h.anonymous.get(`/Patient/${alice}/$access-report`, { Authorization: `Bearer ${await patientToken(hidden)}` })).status, 403);
      await gp.get(`/Patient/${hidden}/$access-report?_since=2020-01-01T00:00:00Z`, { 'X-Request-Id': 'audit-report' });
      const [e] = await eventsOf('audit-report');
      assert.deepEqual(shape(e).subtype, ['operation']);
      assert.equal(patientOf(e), `Patient/${hidden}`);
      assert.equal((await gp.get(`/Patient/${hidden}/$access-report?_since=yesterday`)).status, 400);
    });
  });

  it('logs one JSON line per request, separate from the audit trail', async () => {
    // The harness logs silently; the line's shape is checked on a logger that records.
    const lines: Record<string, unknown>[] = [];
    const logger = { info: (m: string, f?: Record<string, unknown>) => lines.push({ m, ...f }), error: () => undefined, debug: () => undefined };
    const handlers: Record<string, () => void> = {};
    const res = { statusCode: 200, locals: { requestId: 'r1', started: performance.now(), ctx: { clientId: 'gp' } }, on: (e: string, f: () => void) => (handlers[e] = f) };
    requestLog(logger)({ method: 'GET', path: '/Patient/x' } as never, res as never, () => undefined);
    handlers.finish();
    assert.deepEqual(Object.keys(lines[0]).sort(), ['client', 'durationMs', 'm', 'method', 'path', 'requestId', 'status']);
    assert.equal(lines[0].client, 'gp');
  });
});
