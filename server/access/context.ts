/**
 * Who is asking, on behalf of which organisation, and why: built once per request from the
 * verified access token, frozen, and passed to everything that decides or records access.
 * Nothing reads the token again.
 */
export interface AccessContext {
  readonly requestId: string;
  /** The SMART client (null only before authentication, e.g. for an audited 401). */
  readonly clientId: string | null;
  readonly clientName?: string;
  /** The client's organisation as a FHIR Reference (ODS-code identifier and/or reference). */
  readonly organization?: OrganizationRef;
  /** The practitioner the token names (`fhirUser`), if any. */
  readonly practitioner?: string;
  readonly roles: readonly Role[];
  /** Granted scopes, as strings (SMART v1 and v2). */
  readonly scopes: readonly string[];
  /** v3-ActReason purpose of use code (TREAT, ETREAT, BTG, HRESCH, ...). */
  readonly purposeOfUse: string;
  /** The purposes the client is registered for (to say when it could break the glass). */
  readonly registeredPurposes?: readonly string[];
  /** The `patient` claim of patient-facing tokens (confines access to that compartment). */
  readonly patient?: string;
  /** Access token id (jti), for the audit trail. */
  readonly tokenId?: string;
  /** The token issuer. */
  readonly issuer?: string;
  /** Client network address, for the audit trail. */
  readonly address?: string;
  /** Our own tokens: the thumbprint of the registered key the client obtained the token with (background work stays bound to it). */
  readonly clientKey?: string;
}

export type Role = 'auditor' | 'national-service' | 'audit-source';
export const ROLES: readonly Role[] = ['auditor', 'national-service', 'audit-source'];

export interface OrganizationRef {
  readonly reference?: string;
  readonly identifier?: { readonly system?: string; readonly value?: string };
  readonly display?: string;
}

/**
 * The client id under which the server writes its own AuditEvents (`created_by` of the trail's
 * rows). Reserved: the registry refuses it and so does a trusted issuer's token, so no client can
 * pass for the server (decide.ts reads `created_by` for an audit source's own events).
 */
export const SERVER_CLIENT_ID = 'custodian-server';

/** The server's own identity as the writer of the AuditEvents it records. */
export const SERVER_WRITER = { clientId: SERVER_CLIENT_ID, organization: null } as const;

export const ODS_SYSTEM = 'https://fhir.nhs.uk/Id/ods-organization-code';

/** A stable string key for an organisation: `ods|<code>` when it has an ODS identifier, else its reference. */
export function organizationKey(org: OrganizationRef | undefined): string | null {
  if (!org) return null;
  if (org.identifier?.value) return `${org.identifier.system ?? ''}|${org.identifier.value}`;
  if (org.reference) return org.reference;
  return null;
}

/** Deep-freezes a context so no handler can change who is asking. */
export function freezeContext(ctx: AccessContext): AccessContext {
  const freeze = (v: unknown) => {
    if (v && typeof v === 'object' && !Object.isFrozen(v)) {
      Object.freeze(v);
      for (const x of Object.values(v)) freeze(x);
    }
  };
  freeze(ctx);
  return ctx;
}
