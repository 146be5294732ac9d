import type { Coding, Consent } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import type { OrganizationRef, Role } from '../access/context';

/** Who is asking, as the consent engine sees them. */
export interface Actor {
  readonly clientId: string | null;
  readonly organization?: OrganizationRef;
  /** `Practitioner/x` when the token names one. */
  readonly practitioner?: string;
  readonly roles: readonly Role[];
  /** The token's patient claim (patient-facing apps). */
  readonly patient?: string;
}

/** The piece of data being asked for. */
export interface DataItem {
  readonly type: ResourceType;
  readonly id: string;
  /** meta.security of the version asked for. */
  readonly security: readonly Coding[];
  /** The client that created the resource (server-side record). */
  readonly createdBy?: string | null;
  /** For a Consent being read: the organisations and people it names. */
  readonly named?: readonly NamedParty[];
  /** For an AuditEvent: whether it names a patient by identifier (resources/audit-event.ts namesPatientByIdentifier). */
  readonly namesPatientByIdentifier?: boolean;
  /** For an AuditEvent: whether it names a patient by identifier that was not placed (namesUnplacedPatient). */
  readonly namesUnplacedPatient?: boolean;
}

export interface NamedParty {
  readonly reference?: string;
  readonly identifier?: { readonly system?: string; readonly value?: string };
}

/** What the engine needs to know about the patient the data belongs to. */
export interface PatientFacts {
  readonly id: string;
  /** The custodian organisation(s): managingOrganization, else the organisation that created the Patient. */
  readonly custodians: readonly OrganizationRef[];
  /** The patient's Consents (the engine itself keeps only the active ones). */
  readonly consents: readonly Consent[];
}

/** `access` for reads, `disclose` for exports (http://terminology.hl7.org/CodeSystem/consentaction). */
export type ConsentAction = 'access' | 'disclose' | 'correct' | 'collect' | 'use';

export interface DecisionRequest {
  readonly actor: Actor;
  /** v3-ActReason code. */
  readonly purpose: string;
  readonly action: ConsentAction;
  readonly data: DataItem;
  /** The patients the data belongs to (none for data about no patient). */
  readonly patients: readonly PatientFacts[];
  readonly now: number;
  /** The server's answer when no Consent applies: `deny` (opt-in model) or `permit` (opt-out model). */
  readonly defaultPolicy: 'deny' | 'permit';
}
