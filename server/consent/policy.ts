import type { AuditEvent, Consent, ConsentProvision, Patient, Reference, Resource } from 'fhir/r4';
import { definitions, hasContent, patientIdsOf, type ResourceType } from '../../resources';
import { namesPatientByIdentifier, namesUnplacedPatient } from '../../resources/audit-event';
import { ODS_SYSTEM, SERVER_CLIENT_ID, type AccessContext, type OrganizationRef } from '../access/context';
import { bearerPatient } from '../access/scopes';
import type { AccessPolicy } from '../gate/policy';
import type { HistoryVersion, StoredVersion } from '../store/records';
import { decide } from './decide';
import { deny, permit, type Decision } from './decision';
import { isCustodian } from './evaluate';
import { isCustodianPurpose } from './purposes';
import type { Actor, DataItem, DecisionRequest, NamedParty, PatientFacts } from './request';

/** What the consent policy needs to know about a patient, loaded (and cached) by the gate. */
export interface PatientRecord {
  readonly id: string;
  /** The current Patient, when it exists and is not deleted. */
  readonly resource?: Patient;
  /** Organisation key of the client that created the Patient. */
  readonly creatorOrg?: string | null;
  readonly consents: readonly Consent[];
}

/**
 * The gate's loader of patient facts (Patients and their Consents): the committed state, cached
 * and fresh for every request, or a write transaction's own view of it.
 */
export interface PolicyData {
  /**
   * `asker`: the request's AccessContext. A cache checks for changes once per request, and tells
   * requests apart by that object, never by the request id: X-Request-Id is the client's to
   * choose, and a client sending the same one every time would be decided on facts as old as its
   * first request (found by a second reading, stop 23).
   */
  patients(ids: readonly string[], asker: object): Promise<ReadonlyMap<string, PatientRecord>>;
}

export interface ConsentPolicyOptions {
  readonly defaultPolicy: 'deny' | 'permit';
  readonly now: () => number;
}

/**
 * The consent side of the gate: turns stored versions and the AccessContext into engine
 * requests and applies the engine's Decisions. Scopes are checked separately (scope-policy.ts);
 * the gate combines both with deny-overrides.
 */
export class ConsentPolicy implements AccessPolicy {
  constructor(
    private readonly data: PolicyData,
    private readonly options: ConsentPolicyOptions,
  ) {}

  allowsInteraction(): Decision {
    return permit('scope', 'interactions are the scopes\' business');
  }

  async canRead(ctx: AccessContext, versions: readonly StoredVersion[], purpose: { action: 'access' | 'disclose' }, view?: PolicyData): Promise<Decision[]> {
    const ids = new Set<string>();
    for (const v of versions) {
      if (!hasContent(v) || this.decidedByItself(ctx, v)) continue;
      for (const id of patientIdsOf(v)) ids.add(id);
    }
    // Patients and Consents are loaded only when some version needs them.
    const records = ids.size ? await (view ?? this.data).patients([...ids], ctx) : new Map<string, PatientRecord>();
    return versions.map((v) =>
      hasContent(v) ? decide(engineRequest(actorOf(ctx), ctx.purposeOfUse, v, records, purpose.action, this.options)) : deny('no-patient', 'a deletion carries no content'),
    );
  }

  /**
   * A Patient read by its patient, or by its custodian for a custodian purpose, and any Consent
   * read by a national service: the engine decides these from the version alone, so the
   * patient's facts need not be loaded.
   */
  private decidedByItself(ctx: AccessContext, v: StoredVersion): boolean {
    // National services receive every Consent: the engine's first Consent rule, whatever the patient's facts.
    if (v.type === 'Consent') return ctx.roles.includes('national-service');
    if (v.type !== 'Patient') return false;
    if (bearerPatient(ctx) === v.id) return true;
    // An earlier version is judged by the Patient as it is now (engineRequest): its facts are needed.
    if (isHistorical(v)) return false;
    return isCustodianPurpose(ctx.purposeOfUse) && isCustodian(ctx.organization, custodiansOf(v.resource as Patient, v.creatorOrg));
  }

  async canWrite(ctx: AccessContext, type: ResourceType, before: StoredVersion | undefined, after: Resource | undefined, _permission: unknown, view?: PolicyData): Promise<Decision> {
    if (type === 'AuditEvent') {
      return ctx.roles.includes('audit-source') ? permit('recorded-by-client', 'audit sources post AuditEvents') : deny('audit-restricted', 'posting AuditEvents needs the audit-source role');
    }
    const actor = actorOf(ctx);
    if (type === 'Patient') {
      // Only the custodian changes a Patient (including handing it to another organisation by
      // changing managingOrganization). Anyone with the scope may register a new one: its
      // managingOrganization, or else its creator, is its custodian from then on.
      if (before?.resource) {
        const custodians = custodiansOf(before.resource as Patient, before.creatorOrg);
        if (!isCustodian(actor.organization, custodians)) return deny('not-custodian', `only the custodian of Patient/${before.id} may change it`);
        return permit('custodian', `the custodian of Patient/${before.id}`);
      }
      return permit('custodian', 'a new Patient: its managingOrganization, or its creator, becomes its custodian');
    }
    // Consent: the custodian of its patient, or the patient.
    const ids = new Set<string>();
    for (const r of [before?.resource, after]) if (r) for (const id of definitions.Consent.patientIds(r)) ids.add(id);
    if (ids.size === 0) return deny('no-patient', 'a Consent must name a patient of this server (Consent.patient = Patient/<id>)');
    const records = await (view ?? this.data).patients([...ids], ctx);
    for (const id of ids) {
      if (actor.patient === id) continue;
      const record = records.get(id);
      if (!record?.resource) return deny('no-patient', `Patient/${id} is not known here`);
      if (!isCustodian(actor.organization, custodiansOf(record.resource, record.creatorOrg))) {
        return deny('not-custodian', `only the custodian of Patient/${id} or the patient may write its Consents`);
      }
    }
    return permit('custodian', 'the custodian (or the patient) writes the Consent');
  }
}

/**
 * The engine request for `actor` reading `version` (a version with content) for `purpose`. What
 * the engine reads of the content itself (security labels, the parties a Consent names) is
 * read when a rule asks for it: a rule that decides by the actor alone (national services and
 * Consents) never has the content parsed (see store/records.ts).
 */
export function engineRequest(
  actor: Actor,
  purpose: string,
  version: StoredVersion,
  records: ReadonlyMap<string, PatientRecord>,
  action: DecisionRequest['action'],
  options: ConsentPolicyOptions,
): DecisionRequest {
  const type = version.type;
  const historical = isHistorical(version);
  const patients: PatientFacts[] = [];
  for (const id of patientIdsOf(version)) {
    const record = records.get(id);
    if (type === 'Patient') {
      // A Patient's custodian is the one it has now, for its earlier versions too: after a
      // handover the former custodian no longer reads the record by vread or history, and the
      // new one reads all of it. Only a Patient that is gone is judged by the version itself.
      const current = historical && record?.resource ? record : undefined;
      const custodians = current ? custodiansOf(current.resource!, current.creatorOrg) : custodiansOf(version.resource as Patient, version.creatorOrg ?? record?.creatorOrg);
      patients.push({ id, custodians, consents: record?.consents ?? [] });
    } else if (record?.resource) {
      patients.push({ id, custodians: custodiansOf(record.resource, record.creatorOrg), consents: record.consents });
    } else if (type === 'AuditEvent') {
      // A patient an event names who is not (or no longer) here is someone else to every reader
      // but auditors and that patient: it has no custodian. Left out, an event about two
      // patients would be shown to the first one's custodian once the second was deleted, and an
      // audit source reading back an event that names `Patient/x` would learn whether x exists
      // (readable when not, refused when so).
      patients.push({ id, custodians: [], consents: [] });
    }
  }
  let named: readonly NamedParty[] | undefined;
  const data: DataItem = {
    type,
    id: version.id,
    get security() {
      const own = version.resource?.meta?.security ?? [];
      // An earlier version carries the labels the resource has now as well: a label added later
      // (the record marked restricted) covers what was already in it.
      const now = historical ? currentOf(version, records)?.meta?.security : undefined;
      return now?.length ? [...own, ...now] : own;
    },
    createdBy: version.createdBy,
    get named() {
      if (type === 'Consent') named ??= namedParties(version.resource as Consent);
      return named;
    },
    get namesPatientByIdentifier() {
      return type === 'AuditEvent' && !!version.resource && namesPatientByIdentifier(version.resource as AuditEvent);
    },
    // Only an audit source's event can: the server's own name their patients by reference (and
    // are not parsed for this, on the trail's hot search path).
    get namesUnplacedPatient() {
      return type === 'AuditEvent' && version.createdBy !== SERVER_CLIENT_ID && !!version.resource && namesUnplacedPatient(version.resource as AuditEvent);
    },
  };
  return { actor, purpose, action, data, patients, now: options.now(), defaultPolicy: options.defaultPolicy };
}

/**
 * Whether a version was read from history (vread, `_history`): it may be an earlier one than the
 * resource has now. Current rows (reads, search pages) carry no commit sequence.
 */
function isHistorical(version: StoredVersion): boolean {
  return (version as Partial<HistoryVersion>).seq !== undefined;
}

/** The resource as it is now, as the patients' facts hold it (a Patient, or one of their Consents). */
function currentOf(version: StoredVersion, records: ReadonlyMap<string, PatientRecord>): Resource | undefined {
  if (version.type === 'Patient') return records.get(version.id)?.resource;
  if (version.type !== 'Consent') return undefined;
  for (const record of records.values()) {
    const found = record.consents.find((c) => c.id === version.id);
    if (found) return found;
  }
  return undefined;
}

export function actorOf(ctx: AccessContext): Actor {
  return { clientId: ctx.clientId, organization: ctx.organization, practitioner: ctx.practitioner, roles: ctx.roles, patient: bearerPatient(ctx) };
}

/** The custodian organisation(s): managingOrganization, else the organisation that created the Patient. */
export function custodiansOf(patient: Patient, creatorOrg: string | null | undefined): OrganizationRef[] {
  if (patient.managingOrganization) return [toOrganizationRef(patient.managingOrganization)];
  if (!creatorOrg) return [];
  const bar = creatorOrg.indexOf('|');
  return [bar >= 0 ? { identifier: { system: creatorOrg.slice(0, bar) || ODS_SYSTEM, value: creatorOrg.slice(bar + 1) } } : { reference: creatorOrg }];
}

export function toOrganizationRef(ref: Reference): OrganizationRef {
  return {
    reference: ref.reference,
    identifier: ref.identifier?.value ? { system: ref.identifier.system ?? ODS_SYSTEM, value: ref.identifier.value } : undefined,
  };
}

/** Every party a Consent names: provision actors at any depth, its organization and performers. */
export function namedParties(c: Consent): NamedParty[] {
  const out: NamedParty[] = [];
  const walk = (p: ConsentProvision | undefined) => {
    for (const a of p?.actor ?? []) out.push(a.reference);
    for (const child of p?.provision ?? []) walk(child);
  };
  walk(c.provision);
  for (const r of [...(c.organization ?? []), ...(c.performer ?? [])]) out.push(r);
  return out;
}
