import type { AuditEvent, AuditEventAgent, AuditEventEntity, Coding, Reference } from 'fhir/r4';
import type { AccessContext, OrganizationRef } from '../access/context';
import type { Decision } from '../consent/decision';

/**
 * AuditEvent builders following IHE Basic Audit Log Patterns (https://profiles.ihe.net/ITI/BALP/):
 * RESTful read/query/create/update/delete events with the client, server, organisation and user
 * as agents, and the patient, the data, the query and the request id as entities; and the
 * AuthZconsent pattern for decisions a Consent made. Pure functions of what happened.
 */
export const CLIENT_ID_SYSTEM = 'https://custodian.example.org/fhir/NamingSystem/client-id';
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const BALP_ENTITY = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType';
const V3_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

/** restful-interaction codes (http://hl7.org/fhir/R4/codesystem-restful-interaction.html) plus BALP's. */
export type AuditInteraction =
  | 'read'
  | 'vread'
  | 'update'
  | 'patch'
  | 'delete'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'create'
  | 'search-type'
  | 'search-system'
  | 'batch'
  | 'transaction'
  | 'operation';

/** BALP action per interaction: R for reads, E for queries and operations, C/U/D for writes. */
export function actionOf(i: AuditInteraction): AuditEvent['action'] {
  switch (i) {
    case 'read':
    case 'vread':
    case 'history-instance':
      return 'R';
    case 'create':
      return 'C';
    case 'update':
    case 'patch':
      return 'U';
    case 'delete':
      return 'D';
    default:
      return 'E';
  }
}

/** One access the gate saw: the data, whose it is, and what was decided. */
export interface AccessNote {
  readonly interaction: AuditInteraction;
  /** `Type/id[/_history/v]` (or `Type` for a type-level operation). */
  readonly reference: string;
  /** The resource was never stored (a rolled-back create): `reference` is only its type (see `unwritten` in audit/trail.ts). */
  readonly unstored?: boolean;
  readonly patients: readonly string[];
  readonly decision?: Decision;
  /** The HTTP status of this access when it failed on its own (a batch entry, a rolled-back write). */
  readonly status?: number;
}

/** The request as the audit trail records it. */
export interface RequestFacts {
  readonly requestId: string;
  readonly recorded: string;
  /**
   * Who this server is: its fixed base URL (`Audience.issuer`, access/audience.ts), never one
   * built from the request's Host or X-Forwarded-* headers, which the client chooses.
   */
  readonly server: string;
  readonly interaction: AuditInteraction;
  readonly operation?: string;
  /** The request line and headers that matter, for query entities (BALP: base64 of the request). */
  readonly query?: string;
  readonly clientAddress?: string;
  /** Who asked: the AccessContext, or what an unauthenticated request presented. */
  readonly ctx?: AccessContext;
  readonly presented?: { clientId?: string; tokenId?: string };
  readonly status: number;
  readonly message?: string;
}

/**
 * FHIR audit-event-outcome (http://hl7.org/fhir/R4/valueset-audit-event-outcome.html) from the
 * HTTP status, one rule for every event the server writes:
 * - `0` success;
 * - `4` minor failure: the client's own mistake (400, 404, 405, 409, 410, 412, 422, …), nothing
 *   was at stake ("often equivalent to an HTTP 400");
 * - `8` serious failure: the server refused — authentication failed (401) or the access was not
 *   permitted (403). BALP records a refused authorization as 8 (its AuthZconsent deny example),
 *   and a failed authentication is the same kind of security event: an audit consumer looking
 *   for probing and misuse finds every refusal under one code, whatever layer refused;
 * - `12` major failure: the server could not do it (500, 503: a fault, or the database or the
 *   audit trail unavailable).
 */
export function outcomeOf(status: number): AuditEvent['outcome'] {
  if (status < 400) return '0';
  if (status === 401 || status === 403) return '8';
  if (status < 500) return '4';
  return '12';
}

function orgReference(o: OrganizationRef): Reference {
  return {
    ...(o.reference ? { reference: o.reference } : {}),
    ...(o.identifier?.value ? { identifier: { system: o.identifier.system, value: o.identifier.value } } : {}),
    type: 'Organization',
    ...(o.display ? { display: o.display } : {}),
  };
}

function clientReference(f: RequestFacts): Reference {
  const clientId = f.ctx?.clientId ?? f.presented?.clientId;
  if (!clientId) return { display: 'unidentified client (no valid token)' };
  return { identifier: { system: CLIENT_ID_SYSTEM, value: clientId }, type: 'Device', display: f.ctx?.clientName ?? (f.ctx?.clientId ? clientId : `${clientId} (unverified)`) };
}

function serverReference(f: Pick<RequestFacts, 'server'>): Reference {
  return { identifier: { system: 'urn:ietf:rfc:3986', value: f.server }, type: 'Device', display: 'Custodian FHIR server' };
}

function purposeOf(ctx: AccessContext | undefined) {
  return ctx ? [{ coding: [{ system: V3_REASON, code: ctx.purposeOfUse }] }] : undefined;
}

function coding(system: string, code: string, display?: string): Coding {
  return display ? { system, code, display } : { system, code };
}

/** BALP agents: the client application, this server, the client's organisation, the user when the token names one. */
function restAgents(f: RequestFacts): AuditEventAgent[] {
  const action = actionOf(f.interaction);
  const reads = action === 'R';
  // In a read the data flows server → client; in a query or write client → server. BALP's Delete
  // names the client as the application and the server as the data's custodian instead.
  const clientRole = action === 'D' ? coding(DCM, '110150', 'Application') : reads ? coding(DCM, '110152', 'Destination Role ID') : coding(DCM, '110153', 'Source Role ID');
  const serverRole =
    action === 'D' ? coding('http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'custodian', 'Custodian') : reads ? coding(DCM, '110153', 'Source Role ID') : coding(DCM, '110152', 'Destination Role ID');
  const user = f.ctx?.practitioner;
  const agents: AuditEventAgent[] = [
    {
      type: { coding: [clientRole] },
      who: clientReference(f),
      requestor: !user,
      ...(f.clientAddress ? { network: { address: f.clientAddress, type: '2' } } : {}),
      ...(!user && purposeOf(f.ctx) ? { purposeOfUse: purposeOf(f.ctx) } : {}),
    },
    { type: { coding: [serverRole] }, who: serverReference(f), requestor: false, network: { address: f.server, type: '5' } },
  ];
  if (f.ctx?.organization) agents.push({ type: { coding: [coding('http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV', 'healthcare provider')] }, who: orgReference(f.ctx.organization), requestor: false });
  if (user) {
    // BALP: the user receives what is read or searched (IRCP) and authors what is written (AUT).
    const writes = ['C', 'U', 'D'].includes(actionOf(f.interaction) as string);
    agents.push({
      type: { coding: [writes ? coding('http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'AUT', 'author (originator)') : coding('http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'IRCP', 'information recipient')] },
      who: { reference: user },
      requestor: true,
      ...(purposeOf(f.ctx) ? { purposeOfUse: purposeOf(f.ctx) } : {}),
    });
  }
  return agents;
}

function source(f: Pick<RequestFacts, 'server'>, securityServer = false): AuditEvent['source'] {
  let site = f.server;
  try {
    site = new URL(f.server).host;
  } catch {
    /* keep the base URL */
  }
  return {
    site,
    observer: serverReference(f),
    type: [securityServer ? coding('http://terminology.hl7.org/CodeSystem/security-source-type', '6', 'Security Server') : coding('http://terminology.hl7.org/CodeSystem/security-source-type', '4', 'Application Server')],
  };
}

/**
 * The codings of the entities every event has (frozen: the same objects in every event, so the
 * audit store turns them into JSON once, store/audit-frame.ts).
 */
const PERSON = Object.freeze(coding(ENTITY_TYPE, '1', 'Person'));
const PATIENT_ROLE = Object.freeze(coding(OBJECT_ROLE, '1', 'Patient'));
const SYSTEM_OBJECT = Object.freeze(coding(ENTITY_TYPE, '2', 'System Object'));
const DOMAIN_RESOURCE = Object.freeze(coding(OBJECT_ROLE, '4', 'Domain Resource'));
const CONSENT_TYPE = Object.freeze(coding('http://hl7.org/fhir/resource-types', 'Consent', 'Consent'));

function patientEntity(patientId: string): AuditEventEntity {
  return { type: PERSON, role: PATIENT_ROLE, what: { reference: `Patient/${patientId}` } };
}

function requestIdEntity(requestId: string): AuditEventEntity {
  return { type: coding(BALP_ENTITY, 'XrequestId'), what: { identifier: { value: requestId } } };
}

/**
 * The events for one request: one RESTful event per patient whose data it touched (BALP
 * PatientRead/PatientQuery/...; one without a patient when it touched none), and an AuthZconsent
 * event per patient whose access a Consent decided.
 */
export function buildEvents(f: RequestFacts, notes: readonly AccessNote[]): AuditEvent[] {
  const byPatient = new Map<string, AccessNote[]>();
  for (const n of notes) {
    for (const p of n.patients.length ? n.patients : ['']) {
      const list = byPatient.get(p) ?? [];
      list.push(n);
      byPatient.set(p, list);
    }
  }
  if (byPatient.size === 0) byPatient.set('', []);
  const events: AuditEvent[] = [];
  const shared = requestParts(f);
  for (const [patient, list] of byPatient) {
    events.push(restEvent(f, shared, patient || undefined, list));
    const consentDecision = patient ? authzConsentEvent(f, patient, list) : undefined;
    if (consentDecision) events.push(consentDecision);
  }
  return events;
}

/**
 * The parts of a request's RESTful events that are the same for every patient: built once and
 * shared by its events (the same objects), so that a request about a thousand patients does not
 * build them a thousand times, and the audit store can keep them once (store/audit-frame.ts).
 */
interface RequestParts {
  readonly agent: AuditEventAgent[];
  readonly source: AuditEvent['source'];
  /** The entities every event ends with: the query (when there is one) and the request id. */
  readonly last: AuditEventEntity[];
  readonly type: Coding;
  /** The subtype of an event about these interactions (the same list for the same interactions). */
  subtype(interactions: readonly AuditInteraction[]): Coding[];
}

function requestParts(f: RequestFacts): RequestParts {
  const last: AuditEventEntity[] = [];
  if (f.query) {
    last.push({
      type: SYSTEM_OBJECT,
      role: coding(OBJECT_ROLE, '24', 'Query'),
      description: f.query,
      query: Buffer.from(f.query).toString('base64'),
    });
  }
  last.push(requestIdEntity(f.requestId));
  const subtypes = new Map<string, Coding[]>();
  return {
    agent: restAgents(f),
    source: source(f),
    last,
    type: coding('http://terminology.hl7.org/CodeSystem/audit-event-type', 'rest', 'Restful Operation'),
    subtype: (interactions) => {
      const key = interactions.join(' ');
      let subtype = subtypes.get(key);
      if (!subtype) {
        subtype = interactions.map((i) => coding('http://hl7.org/fhir/restful-interaction', i));
        subtypes.set(key, subtype);
      }
      return subtype;
    },
  };
}

function restEvent(f: RequestFacts, shared: RequestParts, patient: string | undefined, notes: readonly AccessNote[]): AuditEvent {
  const interactions = [...new Set([f.interaction, ...notes.map((n) => n.interaction)])];
  const denied = notes.find((n) => n.decision?.effect === 'deny');
  const btg = notes.some((n) => n.decision?.reason === 'break-the-glass');
  let status = f.status;
  // A part of the request that failed on its own (a batch entry) fails this patient's event.
  const failed = notes.map((n) => n.status ?? 0).filter((s) => s >= 400);
  if (status < 400 && failed.length) status = Math.max(...failed);
  if (denied && status < 400) status = 403; // a filtered search still refused this patient's data
  const outcome = outcomeOf(status);
  const entities: AuditEventEntity[] = [];
  if (patient) entities.push(patientEntity(patient));
  const seen = new Set<string>();
  // The data touched (a read of the Patient itself names its version here, the patient above).
  for (const n of notes) {
    const key = `${n.unstored ? '!' : ''}${n.reference}`;
    if (seen.has(key)) continue;
    seen.add(key);
    // A resource that was never stored is named by its type only: no id or version that does not exist.
    const what: Reference = n.unstored ? { type: n.reference, display: `${n.reference} (not stored)` } : { reference: n.reference };
    entities.push({ type: SYSTEM_OBJECT, role: DOMAIN_RESOURCE, what });
  }
  // In a query the Consents that decided are named here (no separate AuthZconsent event).
  const queryConsents = new Set(notes.filter((n) => QUERIES.has(n.interaction)).flatMap((n) => n.decision?.consents ?? []));
  for (const c of queryConsents) entities.push({ type: CONSENT_TYPE, what: { reference: c } });
  entities.push(...shared.last);
  const description = denied ? `${denied.decision!.reason}: ${denied.decision!.detail}` : f.status >= 400 ? f.message : status >= 400 ? 'a part of this request failed and was not done' : undefined;
  return {
    resourceType: 'AuditEvent',
    type: shared.type,
    subtype: shared.subtype(interactions),
    action: actionOf(f.interaction),
    recorded: f.recorded,
    outcome,
    ...(description ? { outcomeDesc: description.slice(0, 1000) } : {}),
    ...(btg ? { purposeOfEvent: [{ coding: [coding(V3_REASON, f.ctx!.purposeOfUse)], text: 'break the glass' }] } : {}),
    agent: shared.agent,
    source: shared.source,
    entity: entities,
  };
}

const CONSENT_REASONS = new Set(['consent-permit', 'consent-deny', 'break-the-glass', 'btg-denied', 'national-opt-out', 'type-1-objection', 'unreadable-consent', 'no-consent', 'default-permit']);

/** Searches and type/system history: their per-patient events name the deciding Consents instead (see restEvent). */
const QUERIES = new Set<AuditInteraction>(['search-type', 'search-system', 'history-type', 'history-system']);

/**
 * BALP AuthZconsent: a Consent decided this patient's access. Written for direct access (read,
 * vread, instance history, writes, operations); a search would otherwise double its events,
 * one pair per patient of every page.
 */
function authzConsentEvent(f: RequestFacts, patient: string, notes: readonly AccessNote[]): AuditEvent | undefined {
  const decisions = notes
    .filter((n) => !QUERIES.has(n.interaction))
    .map((n) => n.decision)
    .filter((d): d is Decision => d !== undefined && CONSENT_REASONS.has(d.reason));
  if (decisions.length === 0) return undefined;
  const consents = [...new Set(decisions.flatMap((d) => d.consents))];
  if (consents.length === 0) return undefined; // BALP's pattern names the deciding Consent(s)
  const deny = decisions.find((d) => d.effect === 'deny');
  const decisive = deny ?? decisions[0];
  const ctx = f.ctx;
  const user = ctx?.practitioner;
  const agents: AuditEventAgent[] = [
    { type: { coding: [coding(DCM, '110150', 'Application')] }, who: clientReference(f), requestor: false, network: { address: f.clientAddress ?? 'unknown', type: '2' } },
    {
      type: { coding: [coding('http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'IRCP', 'information recipient')] },
      who: user ? { reference: user } : clientReference(f),
      requestor: true,
      ...(purposeOf(ctx) ? { purposeOfUse: purposeOf(ctx) } : {}),
    },
    // BALP AuthZconsent requires the user's organisation (userorg, 1..1) even when the token names
    // none (a trusted issuer's token may not): then it is said so, with the issuer that vouched.
    {
      type: { coding: [coding('http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV', 'healthcare provider')] },
      who: ctx?.organization ? orgReference(ctx.organization) : { display: `organisation not named by the access token${ctx?.issuer ? ` (issued by ${ctx.issuer})` : ''}` },
      requestor: false,
    },
    { type: { coding: [coding('http://terminology.hl7.org/CodeSystem/extra-security-role-type', 'authserver', 'authorization server')] }, who: serverReference(f), requestor: false },
  ];
  const entities: AuditEventEntity[] = [patientEntity(patient), ...consents.map((c) => ({ type: coding('http://hl7.org/fhir/resource-types', 'Consent', 'Consent'), what: { reference: c } }))];
  if (ctx?.tokenId) entities.push({ type: coding('https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes', 'UserOauthAgent'), what: { identifier: { value: ctx.tokenId } } });
  entities.push(requestIdEntity(f.requestId));
  return {
    resourceType: 'AuditEvent',
    type: coding(DCM, '110113', 'Security Alert'),
    subtype: [coding('https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType', 'AuthZ-Consent', 'Authorization Decision by Consent')],
    action: 'E',
    recorded: f.recorded,
    outcome: deny ? '8' : '0',
    outcomeDesc: `${decisive.reason}: ${decisive.detail}${decisive.provision ? ` (${decisive.provision})` : ''}`.slice(0, 1000),
    agent: agents,
    source: source(f, true),
    entity: entities,
  };
}

/** A disclosure made outside an HTTP response: a Bulk Data export file, a Subscription notification. */
export interface DisclosureFacts {
  readonly recorded: string;
  /** This server's fixed identity (see RequestFacts.server). */
  readonly baseUrl: string;
  /** The recipient, as it stands when the data leaves. */
  readonly ctx: AccessContext;
  /** The request that asked for it (the export kick-off, the Subscription's creation). */
  readonly requestId: string;
  /** What is being disclosed and why, in words (the kick-off URL and file, the Subscription). */
  readonly description: string;
  readonly clientAddress?: string;
}

const LIFECYCLE = 'http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle';

/**
 * BALP PrivacyDisclosure (Source) events (https://profiles.ihe.net/ITI/BALP/StructureDefinition-IHE.BasicAudit.PrivacyDisclosure.Source.html):
 * one per patient whose data is disclosed, naming the server as source, the client as recipient,
 * the patient and each version disclosed. `byPatient` maps a patient id to the references
 * (`Type/id/_history/v`) of that patient's data; data about no patient is listed under `''`.
 */
export function disclosureEvents(f: DisclosureFacts, byPatient: ReadonlyMap<string, readonly string[]>): AuditEvent[] {
  const facts: RequestFacts = { requestId: f.requestId, recorded: f.recorded, server: f.baseUrl, interaction: 'operation', ctx: f.ctx, status: 200 };
  const agents: AuditEventAgent[] = [
    { type: { coding: [coding(DCM, '110153', 'Source Role ID')] }, who: serverReference(facts), requestor: false, network: { address: f.baseUrl, type: '5' } },
    {
      type: { coding: [coding(DCM, '110152', 'Destination Role ID')] },
      who: clientReference(facts),
      requestor: true,
      network: { address: f.clientAddress ?? 'unknown', type: '2' },
      ...(purposeOf(f.ctx) ? { purposeOfUse: purposeOf(f.ctx) } : {}),
    },
  ];
  if (f.ctx.organization) agents.push({ type: { coding: [coding('http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV', 'healthcare provider')] }, who: orgReference(f.ctx.organization), requestor: false });
  const query: AuditEventEntity = { type: coding(ENTITY_TYPE, '2', 'System Object'), role: coding(OBJECT_ROLE, '24', 'Query'), description: f.description, query: Buffer.from(f.description).toString('base64') };
  return [...byPatient].map(([patient, references]) => ({
    resourceType: 'AuditEvent',
    type: coding(DCM, '110106', 'Export'),
    subtype: [coding(LIFECYCLE, 'disclose', 'Disclose Record Lifecycle Event')],
    action: 'R',
    recorded: f.recorded,
    outcome: '0',
    purposeOfEvent: [{ coding: [coding(V3_REASON, f.ctx.purposeOfUse)] }],
    agent: agents,
    source: source(facts),
    entity: [
      ...(patient ? [patientEntity(patient)] : []),
      ...references.map((reference) => ({ type: SYSTEM_OBJECT, role: DOMAIN_RESOURCE, what: { reference } })),
      query,
      requestIdEntity(f.requestId),
    ],
  }));
}

/** What the token endpoint did with one request (set by its route; see access/token-audit.ts). */
export interface TokenRequestFacts {
  /** The client the request claimed to be (the assertion's `iss`): verified only when a token was issued. */
  readonly clientId?: string;
  /** `issued`, or the OAuth error code answered (RFC 6749 §5.2). */
  readonly result: 'issued' | 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'invalid_scope' | 'unsupported_grant_type' | 'rejected';
  /** Why it was refused, with what only the server log and the audit trail are told (never the caller). */
  readonly description?: string;
  /** The request without its credentials: parameters, and of the assertion only its iss, kid and jti. */
  readonly request: string;
  /** The `jti` of the access token issued, and its scopes. */
  readonly tokenId?: string;
  readonly scope?: string;
}

/**
 * Outcome of a token request: refusals of who the client is or of what it may ask for
 * (`invalid_client` — unknown client, wrong key, bad signature, replay — and `invalid_scope`,
 * an unregistered scope or purpose) are security refusals, `8` like a 401 or 403 elsewhere (see
 * outcomeOf); a malformed request is the client's mistake, `4`.
 */
function tokenOutcome(result: TokenRequestFacts['result']): AuditEvent['outcome'] {
  if (result === 'issued') return '0';
  return result === 'invalid_client' || result === 'invalid_scope' || result === 'invalid_grant' ? '8' : '4';
}

/**
 * A request to the token endpoint, as IHE's ITI-71 Get Access Token audit
 * (https://profiles.ihe.net/ITI/BALP/StructureDefinition-IHE.IUA.71.html): a DICOM User
 * Authentication event, the client application (with the client id it presented, marked
 * unverified unless a token was issued) and this server as the OAuth authorization service,
 * the request without its credentials, and for an issued token its id. Profiled for success;
 * refusals use the same shape with their outcome. No patient: it is on no patient's trail.
 */
export function tokenRequestEvent(f: RequestFacts, t: TokenRequestFacts): AuditEvent {
  const issued = t.result === 'issued';
  const client: Reference = t.clientId
    ? { identifier: { system: CLIENT_ID_SYSTEM, value: t.clientId }, type: 'Device', display: issued ? t.clientId : `${t.clientId} (unverified)` }
    : { display: 'unidentified client (no client id presented)' };
  const description = issued ? undefined : `${t.result}${t.description ? `: ${t.description}` : ''}`;
  return {
    resourceType: 'AuditEvent',
    type: coding(DCM, '110114', 'User Authentication'),
    subtype: [coding('urn:ihe:event-type-code', 'ITI-71', 'Get Access Token')],
    action: 'E',
    recorded: f.recorded,
    outcome: tokenOutcome(t.result),
    ...(description ? { outcomeDesc: description.slice(0, 1000) } : {}),
    agent: [
      { type: { coding: [coding(DCM, '110150', 'Application')] }, who: client, requestor: true, network: { address: f.clientAddress ?? 'unknown', type: '2' } },
      {
        type: { coding: [coding('https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes', 'AuthzOauthService', 'OAuth Authorization Service')] },
        who: serverReference(f),
        requestor: false,
        network: { address: f.server, type: '5' },
      },
    ],
    source: source(f, true),
    entity: [
      { type: coding(ENTITY_TYPE, '2', 'System Object'), role: coding(OBJECT_ROLE, '24', 'Query'), description: t.request, query: Buffer.from(t.request).toString('base64') },
      ...(t.tokenId
        ? [{ type: coding(ENTITY_TYPE, '2', 'System Object'), role: coding(OBJECT_ROLE, '13', 'Security Resource'), what: { identifier: { value: t.tokenId } }, ...(t.scope ? { detail: [{ type: 'scope', valueString: t.scope }] } : {}) }]
        : []),
      requestIdEntity(f.requestId),
    ],
  };
}
