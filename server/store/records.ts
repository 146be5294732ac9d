import type { Resource } from 'fhir/r4';
import { definitions, PATIENT_IDS_REVISION, type ResourceType } from '../../resources';

/** One stored version of a resource, as the store hands it to the gate. */
export interface StoredVersion {
  /** Internal row number of the resource (stable across versions). */
  readonly rid: number;
  readonly type: ResourceType;
  readonly id: string;
  readonly versionId: number;
  /** meta.lastUpdated as epoch milliseconds. */
  readonly lastUpdated: number;
  readonly deleted: boolean;
  /**
   * The resource JSON; absent for a deletion. A version read from a row parses its text on
   * first use: a search page whose decisions need only `patients` never parses it.
   */
  readonly resource?: Resource;
  /** The stored JSON text `resource` is parsed from, when read from a row (a search page sends it out as is). */
  readonly text?: string;
  /**
   * The patients the content is about, as the row keeps them (patientIds when it was written,
   * see patientsColumn); undefined when not known without parsing. Read it through
   * patientIdsOf (resources/).
   */
  readonly patients?: readonly string[];
  /** Client that created the resource (server-side record, never in the resource). */
  readonly createdBy?: string | null;
  /** Organisation key of that client: the custodian of a Patient without managingOrganization. */
  readonly creatorOrg?: string | null;
}

/** A version in a history walk: also carries its commit sequence number and the method that wrote it. */
export interface HistoryVersion extends StoredVersion {
  readonly seq: number;
  readonly method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
}

export interface CurrentRow {
  rid: number | string;
  type: string;
  id: string;
  version_id: number | string;
  last_updated: number | string;
  deleted: number | string | boolean;
  content: string | null;
  created_by: string | null;
  creator_org: string | null;
  /** See patientsColumn. */
  patients: string | null;
}

export interface VersionRow extends Omit<CurrentRow, 'created_by' | 'creator_org' | 'patients'> {
  seq: number | string;
  method: string;
}

/**
 * Row → StoredVersion. pg returns BIGINT columns as strings; everything is normalised here.
 * `resource` is an own getter that parses the text once, on first use (a spread copies it, parsed).
 */
export function fromCurrentRow(row: CurrentRow): StoredVersion {
  return currentVersion(row, {});
}

/** A search page's row with its keyset position (built whole: a spread of a version parses it). */
export function fromPageRow<P>(row: CurrentRow, position: P): StoredVersion & { readonly position: P } {
  return currentVersion(row, { position });
}

function currentVersion<X extends object>(row: CurrentRow, extra: X): StoredVersion & X {
  const deleted = Number(row.deleted) === 1 || row.deleted === true;
  const text = row.content && !deleted ? row.content : undefined;
  let parsed: Resource | undefined;
  return {
    rid: Number(row.rid),
    type: row.type as ResourceType,
    id: row.id,
    versionId: Number(row.version_id),
    lastUpdated: Number(row.last_updated),
    deleted,
    get resource(): Resource | undefined {
      if (parsed === undefined && text !== undefined) parsed = JSON.parse(text) as Resource;
      return parsed;
    },
    text,
    patients: text !== undefined && row.patients != null ? keptPatients(row.patients, Number(row.version_id)) : undefined,
    createdBy: row.created_by,
    creatorOrg: row.creator_org,
    ...extra,
  };
}

/**
 * The `patients` column of a current row: the patients version `versionId` of `resource` is
 * about (its type's patientIds), with that version and PATIENT_IDS_REVISION, as JSON. It is
 * read only for that version under that revision (keptPatients): a row an older build rewrote
 * without it, or one kept under another revision, is parsed instead.
 *
 * AuditEvents keep it too (since stop 24; before, they were parsed for it at every read): an
 * AuditEvent search page parsed each event only for this, ~15% of the search's CPU. The trail's
 * own events of a request about many patients are stored without it (SerializedAuditEvent in
 * store/write.ts). The audit chain covers an event's content, not this column, so `$verify`
 * holds the column to the content as it holds the event's search-index rows
 * (store/audit-chain.ts, `patients-mismatch`): a column edited in the database is named like an
 * index row edited there.
 */
export function patientsColumn(type: ResourceType, resource: Resource, versionId: number): string {
  return JSON.stringify({ r: PATIENT_IDS_REVISION, v: versionId, ids: definitions[type].patientIds(resource) });
}

/** The patients a `patients` column keeps for version `versionId`; undefined (parse the content) when it keeps none for it. */
function keptPatients(column: string, versionId: number): readonly string[] | undefined {
  try {
    const kept = JSON.parse(column) as { r?: unknown; v?: unknown; ids?: unknown };
    if (kept.r !== PATIENT_IDS_REVISION || kept.v !== versionId || !Array.isArray(kept.ids)) return undefined;
    return kept.ids.every((id) => typeof id === 'string') ? (kept.ids as string[]) : undefined;
  } catch {
    return undefined;
  }
}

export function fromVersionRow(row: VersionRow): HistoryVersion {
  const deleted = Number(row.deleted) === 1 || row.deleted === true;
  return {
    rid: Number(row.rid),
    type: row.type as ResourceType,
    id: row.id,
    versionId: Number(row.version_id),
    lastUpdated: Number(row.last_updated),
    deleted,
    resource: row.content && !deleted ? (JSON.parse(row.content) as Resource) : undefined,
    seq: Number(row.seq),
    method: row.method as HistoryVersion['method'],
  };
}
