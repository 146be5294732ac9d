import assert from 'node:assert/strict';
import type { AuditEvent } from 'fhir/r4';
import { randomUUID } from 'node:crypto';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';
import { requestLog } from '../../server/http/pipeline';
import { sharedValidator } from '../../server/validation/validate';
import { Api, assertValidFhir } from '../support/api';
import { clientAssertion } from '../support/auth';
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

const USER_SLOTS = ['IRCP', 'AUT', 'INF', 'CST'];
const slotOf = (a: AuditEvent['agent'][number]) => a.type?.coding?.[0]?.code ?? '?';
const sameWho = (a: { reference?: string; identifier?: { value?: string }; display?: string } | undefined, b: typeof a) =>
  !!a && !!b && ((a.reference !== undefined && a.reference === b.reference) || (a.identifier?.value !== undefined && a.identifier.value === b.identifier?.value) || (a.display !== undefined && a.display === b.display));

/**
 * An event against the BALP example of its interaction, field by field as BALP's profiles slice
 * it: type and action; the outcome; for each of the example's agents (by type; the user by any
 * of BALP's user types), ours with the same requestor flag and the same network type, and the
 * purpose of use where the example has it and only on requestors; the source type; an observer
 * that is one of the agents — for us the server agent (network type 5); and for each of the
 * example's entities (by type and role), ours with the same kind of `what`.
 */
function assertLikeBalp(ours: AuditEvent, name: string): void {
  const example = balp(name);
  const at = (what: string) => `${name}: ${what}`;
  assert.deepEqual([ours.type.system, ours.type.code], [example.type.system, example.type.code], at('type'));
  assert.equal(ours.action, example.action, at('action'));
  assert.equal(ours.outcome, example.outcome, at('outcome'));
  for (const theirs of example.agent) {
    const slot = slotOf(theirs);
    const mine = ours.agent.find((a) => (USER_SLOTS.includes(slot) ? USER_SLOTS.includes(slotOf(a)) : slotOf(a) === slot));
    assert.ok(mine, at(`an agent ${slot} (ours: ${ours.agent.map(slotOf)})`));
    assert.equal(mine.requestor, theirs.requestor, at(`agent ${slot} requestor`));
    assert.equal(mine.network?.type, theirs.network?.type, at(`agent ${slot} network type`));
    if (theirs.purposeOfUse?.length) assert.ok(mine.purposeOfUse?.length, at(`agent ${slot} purposeOfUse`));
  }
  assert.ok(ours.agent.filter((a) => a.purposeOfUse?.length).every((a) => a.requestor), at('purposeOfUse only on the requestor'));
  assert.equal(ours.agent.filter((a) => a.requestor).length, 1, at('one requestor'));
  assert.deepEqual((ours.source.type ?? []).map((c) => c.code), (example.source.type ?? []).map((c) => c.code), at('source.type'));
  assert.ok(example.agent.some((a) => sameWho(a.who, example.source.observer)), at('the example observes through one of its agents'));
  const server = ours.agent.find((a) => a.network?.type === '5') ?? ours.agent.find((a) => slotOf(a) === 'authserver')!;
  assert.ok(sameWho(server.who, ours.source.observer), at('the observer is the server agent'));
  for (const theirs of example.entity ?? []) {
    const key = `${theirs.type?.code}/${theirs.role?.code ?? '-'}`;
    const mine = (ours.entity ?? []).find((x) => `${x.type?.code}/${x.role?.code ?? '-'}` === key);
    assert.ok(mine, at(`an entity ${key}`));
    if (theirs.what?.reference) {
      assert.ok(mine.what?.reference, at(`entity ${key} what.reference`));
      if (theirs.role?.code === '1') assert.match(mine.what!.reference!, /^Patient\//, at(`entity ${key} names the patient`));
    }
    if (theirs.what?.identifier) assert.ok(mine.what?.identifier?.value, at(`entity ${key} what.identifier`));
    if (theirs.query) assert.ok(mine.query, at(`entity ${key} query`));
  }
}

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
        { clientId: 'ehr-audit-reads', ods: 'HOSP2', scopes: ['system/AuditEvent.crs'], purposes: ['HOPERAT'], roles: ['audit-source'] },
        { clientId: 'gp-audit', ods: 'GP1', scopes: ['system/AuditEvent.crs'], purposes: ['HOPERAT'], roles: ['audit-source'] },
        { clientId: 'not-a-source', ods: 'HOSP3', scopes: ['system/AuditEvent.c'], purposes: ['HOPERAT'] },
        { clientId: 'gp2', ods: 'GP2', scopes: ['system/Patient.cruds'], purposes: ['TREAT'] },
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
    assert.ok(includes(ours.entities, example.entities), `${ours.entities} vs ${example.entities}`);
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
    const deleteExample = shape(balp('auditBasicDeleteServer'));
    for (const [id, action, subtype, version] of expected) {
      const [e, ...rest2] = await eventsOf(id);
      assert.equal(rest2.length, 0, id);
      assert.equal(e.action, action, id);
      assert.deepEqual(shape(e).subtype, [subtype]);
      assert.equal(patientOf(e), `Patient/${pid}`, id);
      assert.ok(e.entity!.some((x) => x.what?.reference === version), `${id}: ${JSON.stringify(e.entity)}`);
      // BALP's Delete names the client as the application (110150) and the server as custodian.
      const example = action === 'D' ? deleteExample : createExample;
      assert.ok(includes(shape(e).agents as string[], example.agents.filter((a) => a !== 'AUT') as string[]), `${id}: ${shape(e).agents} vs ${example.agents}`);
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

  describe('field by field against BALP\'s examples, as a user (a trusted issuer\'s token naming a practitioner)', () => {
    async function userToken(claims: Record<string, unknown>): Promise<Api> {
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({ iss: IDP, aud: BASE, exp: now + 300, client_id: 'idp-app', purpose_of_use: 'TREAT', jti: randomUUID(), ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: 'k' })
        .sign(idpKey);
      return new Api(h.app.express, token);
    }
    const SCOPE = 'system/Patient.cruds system/Consent.cruds';
    let custodianUser: Api;
    before(async () => {
      custodianUser = await userToken({ fhirUser: 'Practitioner/p0', organization: 'GP1', scope: SCOPE });
      // bob's Consents: one permits practitioner p1, one denies practitioner p2.
      await gp.post('/Consent', consent(bob, { provision: { type: 'permit', actor: [{ role: { text: 'r' }, reference: { reference: 'Practitioner/p1' } }] } }));
      await gp.post('/Consent', consent(bob, { provision: { type: 'deny', actor: [{ role: { text: 'r' }, reference: { reference: 'Practitioner/p2' } }] } }));
    });

    it('read, search, create, update, patch and delete match BALP\'s server-side examples', async () => {
      const read = rid();
      assert.equal((await custodianUser.get(`/Patient/${alice}`, { 'X-Request-Id': read })).status, 200);
      assertLikeBalp(rest(await eventsOf(read))[0], 'auditBasicReadServer');
      const search = rid();
      assert.equal((await custodianUser.get('/Patient?family=Alice', { 'X-Request-Id': search })).status, 200);
      assertLikeBalp(rest(await eventsOf(search))[0], 'auditBasicQueryGetServer');
      const create = rid();
      const created = await custodianUser.post('/Patient', patient({ managingOrganization: org('GP1') }), { 'X-Request-Id': create });
      assert.equal(created.status, 201);
      const pid = created.body.id;
      assertLikeBalp(rest(await eventsOf(create))[0], 'auditBasicCreateServer');
      const update = rid();
      assert.equal((await custodianUser.put(`/Patient/${pid}`, patient({ id: pid, managingOrganization: org('GP1'), active: true }), { 'X-Request-Id': update })).status, 200);
      assertLikeBalp(rest(await eventsOf(update))[0], 'auditBasicUpdate1');
      const patch = rid();
      assert.equal((await custodianUser.patch(`/Patient/${pid}`, [{ op: 'add', path: '/gender', value: 'other' }], { 'X-Request-Id': patch })).status, 200);
      assertLikeBalp(rest(await eventsOf(patch))[0], 'auditBasicPatch');
      const del = rid();
      assert.ok([200, 204].includes((await custodianUser.delete(`/Patient/${pid}`, { 'X-Request-Id': del })).status));
      assertLikeBalp(rest(await eventsOf(del))[0], 'auditBasicDeleteServer');
    });

    it('a Consent\'s permit and deny match BALP\'s AuthZconsent examples', async () => {
      const permitted = rid();
      const p1 = await userToken({ fhirUser: 'Practitioner/p1', organization: 'HOSP9', scope: SCOPE });
      assert.equal((await p1.get(`/Patient/${bob}`, { 'X-Request-Id': permitted })).status, 200);
      const events = await eventsOf(permitted);
      assertLikeBalp(authz(events)[0], 'auditAuthZconsent');
      assertLikeBalp(rest(events)[0], 'auditBasicReadServer');
      const denied = rid();
      const p2 = await userToken({ fhirUser: 'Practitioner/p2', organization: 'HOSP9', scope: SCOPE });
      assert.equal((await p2.get(`/Patient/${bob}`, { 'X-Request-Id': denied })).status, 403);
      assertLikeBalp(authz(await eventsOf(denied))[0], 'auditAuthZconsent-deny');
    });

    it('a user who is a patient (a guardian\'s fhirUser) is in the report of the patient whose record they read', async () => {
      const guardian = await userToken({ fhirUser: `Patient/${bob}`, organization: 'GP1', scope: SCOPE });
      assert.equal((await guardian.get(`/Patient/${alice}`, { 'X-Request-Id': 'guardian-read' })).status, 200);
      const lines = (await gp.get(`/Patient/${alice}/$access-report?_count=1000`)).body.parameter.filter((p: { name: string }) => p.name === 'access');
      const users = lines.flatMap((l: { part: { name: string; valueReference?: { reference?: string } }[] }) => l.part.filter((p) => p.name === 'user').map((p) => p.valueReference?.reference));
      assert.ok(users.includes(`Patient/${bob}`), 'the server\'s event names Alice as its subject and Bob as the user: it stays in Alice\'s report');
    });

    it('an AuthZconsent event keeps BALP\'s userorg agent when the token names no organisation', async () => {
      const id = rid();
      const p1 = await userToken({ fhirUser: 'Practitioner/p1', scope: SCOPE });
      assert.equal((await p1.get(`/Patient/${bob}`, { 'X-Request-Id': id })).status, 200);
      const [decision] = authz(await eventsOf(id));
      const org = decision.agent.filter((a) => slotOf(a) === 'PROV');
      assert.equal(org.length, 1, 'userorg is 1..1 in BALP AuthZconsent');
      assert.equal(org[0].requestor, false);
      assert.match(org[0].who!.display!, new RegExp(`not named by the access token \\(issued by ${IDP.replace(/\./g, '\\.')}\\)`));
      assert.ok(decision.agent.length >= 4, 'BALP AuthZconsent: at least 4 agents');
    });
  });

  it('reviews of a patient\'s record ($sharing-summary, $access-decision), permitted or refused, are on the patient\'s trail and in $access-report', async () => {
    const asked: [Api, string, string, string][] = [
      [gp, `/Patient/${hidden}/$sharing-summary`, 'review-summary', '0'],
      [gp, `/Patient/${hidden}/$access-decision?client=hospital&purpose=TREAT`, 'review-decision', '0'],
      [hospital, `/Patient/${hidden}/$sharing-summary`, 'review-summary-refused', '8'],
      [hospital, `/Patient/${hidden}/$access-decision?client=gp`, 'review-decision-refused', '8'],
    ];
    for (const [api, path, id, outcome] of asked) {
      const res = await api.get(path, { 'X-Request-Id': id });
      assert.equal(res.status, outcome === '0' ? 200 : 403, path);
      const [e, ...more] = await eventsOf(id);
      assert.equal(more.length, 0, id);
      assert.equal(patientOf(e), `Patient/${hidden}`, `${id}: the patient's entity`);
      assert.equal(e.outcome, outcome, id);
      assert.deepEqual(shape(e).subtype, ['operation']);
    }
    const report = (await gp.get(`/Patient/${hidden}/$access-report`)).body.parameter.filter((p: { name: string }) => p.name === 'access');
    const queries = report.map((l: { part: { name: string; valueString?: string; valueCode?: string }[] }) => ({
      query: l.part.find((p) => p.name === 'query')?.valueString ?? '',
      outcome: l.part.find((p) => p.name === 'outcome')?.valueCode,
    }));
    for (const op of ['$sharing-summary', '$access-decision']) {
      assert.ok(queries.some((q: { query: string; outcome: string }) => q.query.includes(op) && q.outcome === 'permitted'), `${op} permitted is in the report`);
      assert.ok(queries.some((q: { query: string; outcome: string }) => q.query.includes(op) && q.outcome === 'refused'), `${op} refused is in the report`);
    }
  });

  it('a write that fails after its read was permitted (412, 422) is on the patient\'s trail, as a failure', async () => {
    // Found by a second reading (stop 23): only refusals named the patient; a failed If-Match or
    // patch test left one event naming no patient, out of the patient's report.
    const pid = (await gp.post('/Patient', patient({ managingOrganization: org('GP1'), name: [{ family: 'Failham' }] }))).body.id as string;
    const current = (await gp.get(`/Patient/${pid}`)).body;
    const cases: [string, () => Promise<{ status: number }>, number][] = [
      ['fail-if-match', () => gp.put(`/Patient/${pid}`, { ...current, meta: undefined }, { 'If-Match': 'W/"999"', 'X-Request-Id': 'fail-if-match' }), 412],
      ['fail-patch-test', () => gp.patch(`/Patient/${pid}`, [{ op: 'test', path: '/name/0/family', value: 'Other' }], { 'X-Request-Id': 'fail-patch-test' }), 422],
    ];
    for (const [id, send, status] of cases) {
      assert.equal((await send()).status, status, id);
      const [e, ...more] = await eventsOf(id);
      assert.equal(more.length, 0, id);
      assert.equal(patientOf(e), `Patient/${pid}`, `${id}: the patient's entity`);
      assert.notEqual(e.outcome, '0', `${id}: a failure`);
      assert.ok(e.outcomeDesc, id);
    }
    const report = (await gp.get(`/Patient/${pid}/$access-report`)).body.parameter.filter((p: { name: string }) => p.name === 'access');
    const failed = report.filter((l: { part: { name: string; valueCode?: string }[] }) => l.part.some((x) => x.name === 'outcome' && x.valueCode === 'failed'));
    assert.equal(failed.length, 2, JSON.stringify(report));
  });

  it('a deletion shown in history is on the trail of the deleted resource\'s patient', async () => {
    const pid = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id;
    await gp.delete(`/Patient/${pid}`);
    const id = rid();
    const history = await gp.get(`/Patient/${pid}/_history`, { 'X-Request-Id': id });
    assert.equal(history.body.entry.length, 2);
    const [e] = rest(await eventsOf(id));
    assert.equal(patientOf(e), `Patient/${pid}`);
    assert.ok(e.entity!.some((x) => x.what?.reference === `Patient/${pid}/_history/2`), 'the deletion shown');
    assert.ok(e.entity!.some((x) => x.what?.reference === `Patient/${pid}/_history/1`), 'the version before it');
  });

  it('a 410 for a deleted resource, a DELETE or PATCH of one, and a 404 for a version it never had, are on the trail of the resource\'s patient', async () => {
    // Each answer tells that the resource existed and was deleted, which is the patient's data;
    // until stop 25 their events named no patient, so the patient's access report left them out.
    const pid = (await gp.post('/Patient', patient({ managingOrganization: org('GP1'), name: [{ family: 'Goneham' }] }))).body.id as string;
    const cid = (await gp.post('/Consent', consent(pid))).body.id as string;
    assert.equal((await gp.delete(`/Consent/${cid}`)).status, 204);
    const cases: [string, () => Promise<{ status: number }>, number, string][] = [
      ['gone-read', () => gp.get(`/Consent/${cid}`, { 'X-Request-Id': 'gone-read' }), 410, 'read'],
      ['gone-vread', () => gp.get(`/Consent/${cid}/_history/2`, { 'X-Request-Id': 'gone-vread' }), 410, 'vread'],
      ['gone-delete', () => gp.delete(`/Consent/${cid}`, { 'X-Request-Id': 'gone-delete' }), 204, 'delete'],
      ['gone-patch', () => gp.patch(`/Consent/${cid}`, [{ op: 'replace', path: '/status', value: 'inactive' }], { 'X-Request-Id': 'gone-patch' }), 410, 'patch'],
      // Not a deletion, but "no such version" tells as much: that the resource exists.
      ['no-version', () => gp.get(`/Consent/${cid}/_history/9`, { 'X-Request-Id': 'no-version' }), 404, 'vread'],
      // An update that would bring it back, refused on If-Match: the 412 names the deletion's version.
      ['gone-update', () => gp.put(`/Consent/${cid}`, { ...consent(pid), id: cid }, { 'If-Match': 'W/"1"', 'X-Request-Id': 'gone-update' }), 412, 'update'],
    ];
    for (const [id, send, status, interaction] of cases) {
      assert.equal((await send()).status, status, id);
      const [e, ...more] = rest(await eventsOf(id));
      assert.equal(more.length, 0, id);
      assert.deepEqual(e.subtype?.map((s) => s.code), [interaction], id);
      assert.equal(patientOf(e), `Patient/${pid}`, `${id}: the patient's entity`);
      const told = id === 'no-version' || id === 'gone-update' ? `Consent/${cid}` : `Consent/${cid}/_history/2`;
      assert.ok(e.entity!.some((x) => x.what?.reference === told), `${id}: what it told of`);
      assert.equal(e.outcome !== '0', status >= 400, `${id}: outcome ${e.outcome} for a ${status}`);
    }
    const report = (await gp.get(`/Patient/${pid}/$access-report`)).body.parameter.filter((p: { name: string }) => p.name === 'access');
    const told = report.filter((l: unknown) => JSON.stringify(l).includes(`Consent/${cid}/_history/2`));
    // The DELETE that made the deletion, and the four that were told of it.
    assert.equal(told.length, 5, JSON.stringify(report));
    assert.equal(report.filter((l: unknown) => JSON.stringify(l).includes(`"Consent/${cid}"`)).length, 2, 'and the 404 that told it exists, and the 412');

    // Someone who may not see the version deleted is refused (403), on the trail as a refusal.
    const hidden410 = await hospital.get(`/Consent/${cid}`, { 'X-Request-Id': 'gone-refused' });
    assert.equal(hidden410.status, 403);
    const [refused] = rest(await eventsOf('gone-refused'));
    assert.equal(patientOf(refused), `Patient/${pid}`);
    assert.equal(refused.outcome, '8');
  });

  it('a transaction that rolls back names no version that never existed', async () => {
    const pid = (await gp.post('/Patient', patient({ managingOrganization: org('GP1') }))).body.id;
    const id = rid();
    const res = await gp.post(
      '/',
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { fullUrl: 'urn:uuid:8c5a4d3e-0000-4000-8000-000000000001', resource: patient({ managingOrganization: org('GP1') }), request: { method: 'POST', url: 'Patient' } },
          { resource: patient({ id: pid, managingOrganization: org('GP1'), active: false }), request: { method: 'PUT', url: `Patient/${pid}` } },
          // runs last (PUTs after POSTs), and breaks the Consent profile: everything rolls back
          { resource: { resourceType: 'Consent', id: 'not-valid', status: 'active' }, request: { method: 'PUT', url: 'Consent/not-valid' } },
        ],
      },
      { 'X-Request-Id': id },
    );
    assert.ok(res.status >= 400, `rolled back: ${res.status}`);
    const events = await eventsOf(id);
    const entities = events.flatMap((e) => e.entity ?? []);
    const references = entities.map((x) => x.what?.reference).filter(Boolean) as string[];
    assert.ok(!references.some((r) => /\/_history\//.test(r)), `no version: ${references}`);
    assert.ok(references.includes(`Patient/${pid}`), 'the update attempted, on the existing Patient');
    assert.ok(entities.some((x) => x.what?.type === 'Patient' && !x.what.reference && /not stored/.test(x.what.display ?? '')), 'the create attempted, by type only');
    assert.ok(events.every((e) => e.outcome !== '0'), 'and none of it succeeded');
    assert.equal((await gp.get(`/Patient/${pid}`)).body.versionId, undefined);
    assert.equal((await gp.get(`/Patient/${pid}`)).body.meta.versionId, '1');
  });

  describe('the token endpoint', () => {
    const tokenUrl = () => h.app.audience.tokenEndpoint;
    async function ask(id: string, form: Record<string, string>) {
      return h.anonymous.request('post', '/auth/token', { body: new URLSearchParams(form).toString(), raw: true, contentType: 'application/x-www-form-urlencoded', headers: { 'X-Request-Id': id } });
    }
    const base = (assertion: string, extra: Record<string, string> = {}) => ({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
      scope: 'system/Patient.rs',
      ...extra,
    });
    it('every refusal is a BALP authentication event (ITI-71) with the presented client id, outcome 8 or 4, no patient and no credential', async () => {
      const hosp = h.clients.get('hospital')!;
      const other = h.clients.get('gp')!;
      const reused = await clientAssertion(hosp, tokenUrl(), Date.now());
      const cases: [string, Record<string, string>, number, string, string | undefined][] = [
        ['token-unknown', base(await clientAssertion({ ...hosp, clientId: 'nobody' }, tokenUrl(), Date.now())), 401, '8', 'nobody'],
        ['token-wrong-key', base(await clientAssertion(hosp, tokenUrl(), Date.now(), { jwk: { ...other.privateJwk, kid: hosp.privateJwk.kid } })), 401, '8', 'hospital'],
        ['token-first', base(reused), 200, '0', 'hospital'],
        ['token-replay', base(reused), 401, '8', 'hospital'],
        ['token-scope', base(await clientAssertion(hosp, tokenUrl(), Date.now()), { scope: 'system/AuditEvent.rs' }), 400, '8', 'hospital'],
        ['token-purpose', base(await clientAssertion(hosp, tokenUrl(), Date.now()), { purpose_of_use: 'HRESCH' }), 400, '8', 'hospital'],
        ['token-malformed', { grant_type: 'password' }, 400, '4', undefined],
      ];
      for (const [id, form, status, outcome, client] of cases) {
        const res = await ask(id, form);
        assert.equal(res.status, status, `${id}: ${res.text}`);
        const [e, ...more] = await eventsOf(id);
        assert.equal(more.length, 0, id);
        assert.deepEqual([e.type.code, e.subtype?.[0].code, e.action, e.outcome], ['110114', 'ITI-71', 'E', outcome], id);
        const requestor = e.agent.find((a) => a.requestor)!;
        assert.equal(requestor.who?.identifier?.value, client, `${id}: the presented client id`);
        if (client && status !== 200) assert.match(requestor.who!.display!, /unverified/);
        assert.equal(patientOf(e), undefined, `${id}: no patient`);
        const request = e.entity!.find((x) => x.role?.code === '24')!;
        assert.equal(Buffer.from(request.query!, 'base64').toString(), request.description);
        if (form.client_assertion) assert.ok(!request.description!.includes(form.client_assertion), `${id}: the assertion itself is not kept`);
        if (status === 200) assert.ok(e.entity!.some((x) => x.role?.code === '13' && x.what?.identifier?.value), 'the token issued');
        else assert.ok(e.outcomeDesc, `${id}: why`);
      }
      const [unknown] = await eventsOf('token-unknown');
      assert.match(unknown.outcomeDesc!, /unknown client nobody/, 'the reason only the log and the trail are told');
    });
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

    it('an event naming its patient by NHS number or by this server\'s full URL is placed on that patient\'s trail; the answer does not tell whether the number was found', async () => {
      // A source that may also read what it recorded (an event about no patient is its own to read).
      const source = await h.as('ehr-audit-reads', { purpose: 'HOPERAT' });
      const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
      const mk = async (family: string, nhs: string) =>
        (await gp.post('/Patient', patient({ name: [{ family }], identifier: [{ system: NHS, value: nhs }], managingOrganization: org('GP1') }))).body.id as string;
      const known = await mk('Knownby', '9000002001');
      // Two records with one number (a duplicate awaiting merge): the event cannot say which.
      await mk('Twin', '9000002028');
      await mk('Twin', '9000002028');
      const template = balp('auditBasicReadServer') as unknown as AuditEvent;
      delete template.id;
      const about = (what: Record<string, unknown>, recorded: string): AuditEvent => ({
        ...template,
        recorded,
        entity: template.entity!.map((x) => (x.what?.reference?.startsWith('Patient/') ? { ...x, what } : x)),
      });
      const post = async (what: Record<string, unknown>, recorded: string) => {
        const res = await source.post('/AuditEvent', about(what, recorded));
        assert.equal(res.status, 201, res.text);
        const id = /AuditEvent\/([^/]+)/.exec(res.headers.location as string)![1];
        const stored = (await auditor.get(`/AuditEvent/${id}`)).body as AuditEvent;
        return { res, stored, patient: stored.entity!.find((x) => x.role?.code === '1')!.what! };
      };
      const byNumber = (nhs: string) => ({ type: 'Patient', identifier: { system: NHS, value: nhs } });

      const found = await post(byNumber('9000002001'), '2026-02-01T10:00:00Z');
      assert.equal(found.patient.reference, `Patient/${known}`, 'the one Patient with that number');
      assert.deepEqual(found.patient.identifier, { system: NHS, value: '9000002001' }, 'the identifier kept');
      const missing = await post(byNumber('9000002044'), '2026-02-01T10:00:01Z');
      assert.equal(missing.patient.reference, undefined, 'no Patient has it: left as it was');
      const twice = await post(byNumber('9000002028'), '2026-02-01T10:00:02Z');
      assert.equal(twice.patient.reference, undefined, 'two have it: left as it was');
      // Found or not, the answer is the same: 201 and an OperationOutcome, not the stored event.
      for (const { res } of [found, missing, twice]) {
        assert.equal(res.body.resourceType, 'OperationOutcome');
        assert.match(res.body.issue[0].diagnostics, /not returned/);
      }
      // The same in a batch.
      const batch = await source.post('/', { resourceType: 'Bundle', type: 'batch', entry: [{ resource: about(byNumber('9000002001'), '2026-02-01T10:00:03Z'), request: { method: 'POST', url: 'AuditEvent' } }] });
      assert.equal(batch.status, 200, batch.text);
      assert.equal(batch.body.entry[0].resource, undefined);
      assert.equal(batch.body.entry[0].response.outcome.resourceType, 'OperationOutcome');

      const full = await post({ reference: `${BASE}/Patient/${known}` }, '2026-02-01T10:00:04Z');
      assert.equal(full.patient.reference, `Patient/${known}`, 'this server\'s full URL made relative');
      assert.equal(full.res.body.resourceType, 'AuditEvent', 'and answered as usual: the client named the patient itself');
      const elsewhere = await post({ reference: `https://elsewhere.example/fhir/Patient/${known}` }, '2026-02-01T10:00:05Z');
      assert.equal(elsewhere.patient.reference, `https://elsewhere.example/fhir/Patient/${known}`, 'another server\'s patient is not ours');

      // Reading them back does not tell either: every event that named its patient by number is
      // refused to the source, found or not; one about no patient of ours is its own to read.
      for (const { stored } of [found, missing, twice]) assert.equal((await source.get(`/AuditEvent/${stored.id}`)).status, 403, stored.id);
      assert.equal((await source.get(`/AuditEvent/${elsewhere.stored.id}`)).status, 200);
      const listed = ((await source.get('/AuditEvent?date=ge2026-02-01T00:00:00Z&date=le2026-02-02&_count=100')).body.entry ?? []).map((e: { resource: AuditEvent }) => e.resource.id);
      assert.deepEqual(listed, [elsewhere.stored.id], 'nor does searching');

      const report = ((await gp.get(`/Patient/${known}/$access-report?_since=2026-02-01T00:00:00Z&_count=1000`)).body.parameter ?? []).filter((p: { name: string }) => p.name === 'access');
      const when = report.map((l: { part: { name: string; valueInstant?: string }[] }) => l.part.find((p) => p.name === 'when')?.valueInstant)
        .filter((w: string) => w.startsWith('2026-02-01'))
        .sort();
      assert.deepEqual(when, ['2026-02-01T10:00:00Z', '2026-02-01T10:00:03Z', '2026-02-01T10:00:04Z'], 'the patient\'s report shows the accesses recorded by number and by full URL');
      assert.equal((await auditor.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);

      // Each identifier is a lookup inside the write transaction: at most 20 distinct ones an
      // event (a 422, nothing stored), the same one named twice looked up once.
      const many = (n: number, recorded: string) => ({
        ...about(byNumber('9000002001'), recorded),
        entity: Array.from({ length: n }, (_, i) => ({ what: byNumber(String(9100000000 + i)) })),
      });
      const tooMany = await source.post('/AuditEvent', many(21, '2026-02-01T11:00:00Z'));
      assert.equal(tooMany.status, 422, tooMany.text);
      assert.equal(tooMany.body.resourceType, 'OperationOutcome');
      assert.match(tooMany.body.issue[0].diagnostics, /at most 20 patients by identifier/);
      const twenty = { ...many(20, '2026-02-01T11:00:01Z') };
      twenty.entity = [...twenty.entity, ...twenty.entity];
      assert.equal((await source.post('/AuditEvent', twenty)).status, 201, 'twenty, each named twice');
      const stored = (await auditor.get('/AuditEvent?date=ge2026-02-01T11:00:00Z&date=lt2026-02-01T12:00:00Z')).body.entry ?? [];
      assert.deepEqual(stored.map((e: { resource: AuditEvent }) => e.resource.recorded), ['2026-02-01T11:00:01Z'], 'the refused one was not stored');

      // Prefer: return=minimal wins: no body, and no Content-Location for a body that is not there.
      const minimal = await source.post('/AuditEvent', about(byNumber('9000002001'), '2026-02-01T11:00:02Z'), { Prefer: 'return=minimal' });
      assert.equal(minimal.status, 201);
      assert.equal(minimal.text, '');
      assert.ok(minimal.headers.location);
      assert.equal(found.res.headers['content-location'], undefined, 'a withheld body has no Content-Location');
      // Someone who may not post AuditEvents gets no lookup made for it: the refusal names no patient.
      const refused = await (await h.as('not-a-source', { purpose: 'HOPERAT' })).post('/AuditEvent', about(byNumber('9000002001'), '2026-02-01T11:00:03Z'), { 'X-Request-Id': 'not-a-source' });
      assert.equal(refused.status, 403, refused.text);
      assert.ok((await eventsOf('not-a-source')).every((e) => patientOf(e) === undefined), 'no patient on the refusal');
    });

    it('a transaction Bundle may make at most 100 lookups by identifier in all (422, nothing stored); a batch\'s entries are transactions of their own', async () => {
      const source = await h.as('ehr-audit-reads', { purpose: 'HOPERAT' });
      const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
      const template = balp('auditBasicReadServer') as unknown as AuditEvent;
      delete template.id;
      // Twenty patients by number an event (each event's own limit), each entry recorded at its own second.
      const event = (k: number, minute: string): AuditEvent => ({
        ...template,
        recorded: `2026-02-03T10:${minute}:${String(k).padStart(2, '0')}Z`,
        entity: Array.from({ length: 20 }, (_, i) => ({ what: { type: 'Patient', identifier: { system: NHS, value: String(9200000000 + k * 100 + i) } } })),
      });
      const bundle = (type: 'transaction' | 'batch', n: number, minute: string) => ({
        resourceType: 'Bundle',
        type,
        entry: Array.from({ length: n }, (_, k) => ({ resource: event(k, minute), request: { method: 'POST', url: 'AuditEvent' } })),
      });
      const storedIn = async (minute: string) =>
        ((await auditor.get(`/AuditEvent?date=ge2026-02-03T10:${minute}:00Z&date=lt2026-02-03T10:${minute}:59Z&_count=100`)).body.entry ?? []).length;

      const hundred = await source.post('/', bundle('transaction', 5, '01'));
      assert.equal(hundred.status, 200, hundred.text);
      assert.equal(await storedIn('01'), 5, 'a hundred lookups: every event stored');

      const more = await source.post('/', bundle('transaction', 6, '02'));
      assert.equal(more.status, 422, more.text);
      assert.equal(more.body.resourceType, 'OperationOutcome');
      assert.match(more.body.issue[0].diagnostics, /at most 100 patients by identifier/);
      assert.equal(await storedIn('02'), 0, 'the transaction stored nothing');

      const batch = await source.post('/', bundle('batch', 6, '03'));
      assert.equal(batch.status, 200, batch.text);
      assert.deepEqual(batch.body.entry.map((e: { response: { status: string } }) => e.response.status.slice(0, 3)), ['201', '201', '201', '201', '201', '201']);
      assert.equal(await storedIn('03'), 6, 'in a batch each entry is looked up in its own transaction');
      assert.equal((await auditor.get('/AuditEvent/$verify')).body.parameter[0].valueBoolean, true);
    });

    it('a patient named by a number this server could not place is someone else: an event naming one of the reader\'s patients and a number reads the same, found or not', async () => {
      // Found by a second reading (stop 25): a source that is the custodian of Y posts an event
      // naming Y by reference and a number N; found, N is another custodian's patient and the
      // event is refused to it, and left out of Y's report; not found, the event was about Y alone,
      // readable, counted and reported: which told it whether N is on this server.
      const source = await h.as('gp-audit', { purpose: 'HOPERAT' });
      const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
      const y = (await gp.post('/Patient', patient({ name: [{ family: 'Ours' }], managingOrganization: org('GP1') }))).body.id as string;
      const other = await (await h.as('gp2')).post('/Patient', patient({ name: [{ family: 'Theirs' }], identifier: [{ system: NHS, value: '9000002060' }], managingOrganization: org('GP2') }));
      assert.equal(other.status, 201, other.text);
      const template = balp('auditBasicReadServer') as unknown as AuditEvent;
      delete template.id;
      const mixed = (nhs: string, recorded: string): AuditEvent => ({
        ...template,
        recorded,
        entity: [
          ...template.entity!.map((x) => (x.what?.reference?.startsWith('Patient/') ? { ...x, what: { reference: `Patient/${y}` } } : x)),
          { role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1' }, what: { type: 'Patient', identifier: { system: NHS, value: nhs } } },
        ],
      });
      const count = async () => (await source.get(`/AuditEvent?patient=Patient/${y}&_summary=count`)).body.total as number;
      const report = async () => ((await gp.get(`/Patient/${y}/$access-report?_since=2026-03-01T00:00:00Z&_count=1000`)).body.parameter ?? []).filter((p: { name: string }) => p.name === 'access').length;
      // Each step also leaves the server's own events on Y's trail (the POST, the refused read,
      // the count): the same ones whichever number was posted.
      const seen: { status: number; count: number; report: number }[] = [];
      for (const [nhs, recorded] of [['9000002060', '2026-03-01T10:00:00Z'], ['9000002079', '2026-03-01T10:00:01Z']]) {
        const before = { count: await count(), report: await report() };
        const res = await source.post('/AuditEvent', mixed(nhs, recorded));
        assert.equal(res.status, 201, res.text);
        const id = /AuditEvent\/([^/]+)/.exec(res.headers.location as string)![1];
        const status = (await source.get(`/AuditEvent/${id}`)).status;
        seen.push({ status, count: (await count()) - before.count, report: (await report()) - before.report });
      }
      assert.equal(seen[0].status, 403);
      assert.deepEqual(seen[1], seen[0], 'found (another custodian\'s patient) and not found read alike');
      const posted = async (api: Api) => ((await api.get(`/AuditEvent?patient=Patient/${y}&date=ge2026-03-01&date=lt2026-03-02`)).body.entry ?? []).length;
      assert.equal(await posted(source), 0, 'neither is found by searching');
      assert.equal(await posted(auditor), 2, 'auditors see both');
    });

    it('an event about two patients stays out of each one\'s access report, which would show them the other (auditors see it); one without a subtype reads as its type', async () => {
      const source = await h.as('ehr-audit', { purpose: 'HOPERAT' });
      const event = balp('auditBasicReadServer') as unknown as Record<string, unknown>;
      delete event.id;
      const entities = event.entity as { what: { reference?: string } }[];
      entities.find((x) => x.what.reference?.startsWith('Patient/'))!.what.reference = `Patient/${alice}`;
      entities.push({ what: { reference: `Patient/${bob}` } });
      const both = (await source.post('/AuditEvent', { ...event, recorded: '2026-01-02T03:04:05Z' })).body.id as string;
      const justAlice = { ...event, entity: entities.slice(0, -1), recorded: '2026-01-02T03:04:06Z' };
      delete (justAlice as { subtype?: unknown }).subtype;
      const alone = (await source.post('/AuditEvent', justAlice)).body.id as string;
      const lines = async (api: Api) =>
        ((await api.get(`/Patient/${alice}/$access-report?_since=2026-01-02T00:00:00Z&_count=1000`)).body.parameter ?? [])
          .filter((p: { name: string }) => p.name === 'access')
          .map((l: { part: { name: string; valueString?: string; valueInstant?: string }[] }) => Object.fromEntries(l.part.map((p) => [p.name, p.valueString ?? p.valueInstant])));
      const custodianSees = await lines(gp);
      assert.equal((await auditor.get(`/AuditEvent/${both}`)).status, 200);
      assert.ok(!custodianSees.some((l: Record<string, string>) => l.when === '2026-01-02T03:04:05Z'), 'the two-patient event is not in Alice\'s report');
      const single = custodianSees.find((l: Record<string, string>) => l.when === '2026-01-02T03:04:06Z');
      assert.ok(single, 'the event about Alice alone is');
      assert.ok(single.what, 'its what is not empty');
      assert.ok((await lines(auditor)).some((l: Record<string, string>) => l.when === '2026-01-02T03:04:05Z'), 'auditors see the two-patient event in the report');
      assert.ok(alone);
    });

    it('may not record events ahead of the server\'s clock, which would push real accesses out of a patient\'s report (422, nothing stored)', async () => {
      const source = await h.as('ehr-audit', { purpose: 'HOPERAT' });
      const event = balp('auditBasicReadServer') as unknown as Record<string, unknown>;
      delete event.id;
      (event.entity as { what: { reference?: string } }[]).find((x) => x.what.reference?.startsWith('Patient/'))!.what.reference = `Patient/${alice}`;
      // Counted by the date it claims (a count of Alice's events is itself on her trail now).
      const claimed = `/AuditEvent?patient=${alice}&date=9999-12-31&_summary=count`;
      assert.equal((await auditor.get(claimed)).body.total, 0);
      const ahead = await source.post('/AuditEvent', { ...event, recorded: '9999-12-31T00:00:00Z' });
      assert.equal(ahead.status, 422);
      assert.match(ahead.body.issue[0].diagnostics, /AuditEvent.recorded .* is ahead of this server's clock/);
      assert.equal((await auditor.get(claimed)).body.total, 0, 'nothing was stored');
      const withinSkew = new Date(Date.now() + 60_000).toISOString();
      assert.equal((await source.post('/AuditEvent', { ...event, recorded: withinSkew })).status, 201, 'a clock a minute ahead is tolerated');
    });
  });

  describe('$access-report', () => {
    async function patientToken(pid: string, extra: Record<string, unknown> = {}): Promise<string> {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ iss: IDP, aud: BASE, exp: now + 300, client_id: 'patient-app', scope: 'patient/Patient.rs patient/AuditEvent.rs', patient: pid, purpose_of_use: 'PATRQT', ...extra })
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
      // A patient app's token that also names the custodian's organisation (an identity provider
      // that stamps its organisation on every token) still reviews its own patient only: found by
      // a second reading (stop 22), it read Alice's report and sharing summary.
      const stamped = { Authorization: `Bearer ${await patientToken(hidden, { organization: 'GP1' })}` };
      assert.equal((await h.anonymous.get(`/Patient/${hidden}/$access-report`, stamped)).status, 200);
      for (const op of ['$access-report', '$sharing-summary']) {
        assert.equal((await h.anonymous.get(`/Patient/${alice}/${op}`, stamped)).status, 403, op);
      }
      // Nor where a Consent of another patient was sent ($delivery-status keeps its own check).
      const aliceConsent = (await gp.get(`/Consent?patient=${alice}`)).body.entry[0].resource.id as string;
      assert.equal((await gp.get(`/Consent/${aliceConsent}/$delivery-status`)).status, 200);
      assert.equal((await h.anonymous.get(`/Consent/${aliceConsent}/$delivery-status`, stamped)).status, 403);
      await gp.get(`/Patient/${hidden}/$access-report?_since=2020-01-01T00:00:00Z`, { 'X-Request-Id': 'audit-report' });
      const [e] = await eventsOf('audit-report');
      assert.deepEqual(shape(e).subtype, ['operation']);
      assert.equal(patientOf(e), `Patient/${hidden}`);
      assert.equal((await gp.get(`/Patient/${hidden}/$access-report?_since=yesterday`)).status, 400);
    });
    it("shows a patient no other patient's details: a query's search terms and an outcome text naming others are the auditors' only", async () => {
      // Found by a second reading (stop 23): the query of a search for several patients, and a
      // failed transaction's outcome text, are the whole request's, and went into each one's report.
      const both = await gp.get(`/Patient?_id=${alice},${hidden}`, { 'X-Request-Id': 'report-both' });
      assert.equal(both.body.entry.length, 2);
      const reportOf = async (api: Api) => JSON.stringify((await api.get(`/Patient/${hidden}/$access-report?_count=1000`)).body);
      const forCustodian = await reportOf(gp);
      assert.ok(!forCustodian.includes(alice), "Alice's id is not in Hidden's report for its custodian");
      assert.ok(forCustodian.includes(`GET ${h.config.baseUrl}/Patient"`), 'the request line stays, without its terms');
      assert.ok((await reportOf(auditor)).includes(`_id=${alice},${hidden}`), 'auditors see the whole query');
      // A failed transaction's text quotes its failing entry, naming another patient.
      const strip = (r: Record<string, unknown>) => ({ ...r, meta: undefined });
      const hiddenNow = strip((await gp.get(`/Patient/${hidden}`)).body);
      const aliceNow = strip((await gp.get(`/Patient/${alice}`)).body);
      const tx = await gp.post('/', {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: hiddenNow, request: { method: 'PUT', url: `Patient/${hidden}` } },
          { resource: aliceNow, request: { method: 'PUT', url: `Patient/${alice}`, ifMatch: 'W/"999"' } },
        ],
      });
      assert.equal(tx.status, 412, tx.text);
      const afterTx = await reportOf(gp);
      assert.ok(!afterTx.includes(alice), 'nor through an outcome text');
      // Nor anything else a failure's text quotes (found by a third reading): another patient's Consent id.
      const aliceConsent = (await gp.post('/Consent', consent(alice))).body as Record<string, unknown>;
      const tx2 = await gp.post('/', {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: strip((await gp.get(`/Patient/${hidden}`)).body), request: { method: 'PUT', url: `Patient/${hidden}` } },
          { resource: { ...aliceConsent, meta: undefined }, request: { method: 'PUT', url: `Consent/${aliceConsent.id}`, ifMatch: 'W/"999"' } },
        ],
      });
      assert.equal(tx2.status, 412, tx2.text);
      assert.ok(!(await reportOf(gp)).includes(aliceConsent.id as string), "Alice's Consent id is not in Hidden's report");
      assert.ok((await reportOf(auditor)).includes(aliceConsent.id as string), 'auditors see it');
      // A patient's own app is not told which client ids have scopes (whether they are registered).
      const own = { Authorization: `Bearer ${await patientToken(hidden)}` };
      for (const client of ['hospital', 'no-such-client']) {
        const decision = await h.anonymous.get(`/Patient/${hidden}/$access-decision?client=${client}&purpose=TREAT`, own);
        assert.equal(decision.status, 200, decision.text);
        assert.ok(!decision.text.includes('scopesAllow'), decision.text);
      }
      const audited = await reportOf(auditor); assert.ok(audited.includes(alice) && /precondition|If-Match|does not match/i.test(audited), `which auditors see: ${JSON.stringify(JSON.parse(audited).parameter.filter((p: { part?: unknown[] }) => p.part).map((p: { part: { name: string; valueString?: string; valueCode?: string }[] }) => p.part.filter((x) => ['what', 'outcome', 'reason', 'query'].includes(x.name)).map((x) => x.valueString ?? x.valueCode)))}`);
    });

    it('pages newest first: next links walk every line once, and a cursor is for its report and caller only', async () => {
      type Param = { name: string; valueUri?: string; part?: { name: string; valueReference?: { reference?: string }; valueInstant?: string }[] };
      const lines = (body: { parameter: Param[] }) => body.parameter.filter((p) => p.name === 'access' || p.name === 'decision');
      const eventOf = (l: Param) => l.part!.find((x) => x.name === 'event')!.valueReference!.reference!;
      const nextOf = (body: { parameter: Param[] }) => body.parameter.find((p) => p.name === 'next')?.valueUri;
      const pages: string[][] = [];
      const base = h.config.baseUrl!;
      let url: string | undefined = `/Patient/${hidden}/$access-report?_count=3`;
      let requests = 0;
      while (url) {
        const res = await gp.get(url.startsWith('/') ? url : url.slice(base.length));
        requests++;
        assert.equal(res.status, 200, res.text);
        assert.ok(lines(res.body).length <= 3);
        assert.equal(res.body.parameter.find((p: Param & { valueInteger?: number }) => p.name === 'count').valueInteger, lines(res.body).length);
        pages.push(lines(res.body).map(eventOf));
        url = nextOf(res.body);
        if (url) assert.ok(url.startsWith(`${base}/Patient/${hidden}/$access-report?`) && new URL(url).searchParams.get('_count') === '3', url);
      }
      assert.ok(pages.length > 3, `${pages.length} pages`);
      const walked = pages.flat();
      assert.equal(new Set(walked).size, walked.length, 'no line twice');
      // Read whole afterwards: the same lines in the same order, below the reviews the walk itself wrote.
      const whole = await gp.get(`/Patient/${hidden}/$access-report?_count=1000`);
      const all = lines(whole.body).map(eventOf);
      assert.equal(nextOf(whole.body), undefined);
      assert.equal(all.length, walked.length + requests);
      assert.deepEqual(all.slice(requests), walked);
      const whens = lines(whole.body).map((l) => Date.parse(l.part!.find((x) => x.name === 'when')!.valueInstant!));
      assert.ok(whens.every((w, i) => i === 0 || whens[i - 1] >= w), 'newest first');
      // The cursor is sealed and bound: another caller, another patient, another _since or an edit is a 400.
      const first = await gp.get(`/Patient/${hidden}/$access-report?_count=2`);
      const cursor = new URL(nextOf(first.body)!).searchParams.get('_cursor')!;
      assert.equal((await gp.get(`/Patient/${hidden}/$access-report?_count=2&_cursor=${cursor}`)).status, 200);
      assert.equal((await auditor.get(`/Patient/${hidden}/$access-report?_count=2&_cursor=${cursor}`)).status, 400, 'another caller');
      assert.equal((await gp.get(`/Patient/${alice}/$access-report?_count=2&_cursor=${cursor}`)).status, 400, 'another patient');
      assert.equal((await gp.get(`/Patient/${hidden}/$access-report?_count=2&_since=2020-01-01T00:00:00Z&_cursor=${cursor}`)).status, 400, 'another _since');
      // A character in the middle: it carries six bits of the sealed bytes. The last ones may
      // carry padding bits only (base64url), so an edit there can decode to the same bytes.
      const at = Math.floor(cursor.length / 2);
      const edited = `${cursor.slice(0, at)}${cursor[at] === 'A' ? 'B' : 'A'}${cursor.slice(at + 1)}`;
      assert.equal((await gp.get(`/Patient/${hidden}/$access-report?_count=2&_cursor=${edited}`)).status, 400, 'edited');
      // A caller refused the review is refused before its cursor is looked at (and the attempt is on the trail).
      assert.equal((await hospital.get(`/Patient/${hidden}/$access-report?_cursor=${cursor}`)).status, 403);
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

describe('Audit: the server is recorded by its fixed identity, never by the headers a client sends', () => {
  let h: Harness;
  before(async () => {
    // No CUSTODIAN_BASE_URL: links follow X-Forwarded-*, but the server's identity is the listen address.
    h = await startHarness({ env: { CUSTODIAN_BASE_URL: '' }, listenUrl: 'http://127.0.0.1:8080' });
  });
  after(() => h.close());

  it('a client that names another host in X-Forwarded-Host cannot write it into its audit events', async () => {
    const forged = { 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Prefix': '/elsewhere', 'X-Request-Id': 'forged-host' };
    const res = await h.api.get('/Patient?family=Nobody', forged);
    assert.equal(res.status, 200);
    assert.match(res.body.link[0].url, /^https:\/\/evil\.example\/elsewhere\//, 'links follow the proxy headers, as they should');
    const found = (await h.api.get('/AuditEvent?entity:identifier=forged-host')).body.entry.map((e: { resource: AuditEvent }) => e.resource) as AuditEvent[];
    assert.equal(found.length, 1);
    const [e] = found;
    assert.doesNotMatch(JSON.stringify(e), /evil/);
    const server = e.agent.find((a) => a.network?.type === '5')!;
    assert.equal(server.network!.address, h.app.audience.issuer);
    assert.equal(server.who!.identifier!.value, h.app.audience.issuer);
    assert.equal(e.source.observer.identifier!.value, h.app.audience.issuer);
    assert.equal(e.source.site, '127.0.0.1:8080');
    const query = e.entity!.find((x) => x.role?.code === '24')!;
    assert.match(query.description!, /^GET http:\/\/127\.0\.0\.1:8080\/Patient\?family=Nobody\n/, 'the client\'s path and query, in front of them the server\'s own name');
  });
});
