import type { Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';

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
  /** The resource JSON; absent for a deletion. */
  readonly resource?: Resource;
  /** The stored JSON text `resource` was parsed from, when read from a row (a search page sends it out as is). */
  readonly text?: string;
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
}

export interface VersionRow extends Omit<CurrentRow, 'created_by' | 'creator_org'> {
  seq: number | string;
  method: string;
}

/** Row → StoredVersion. pg returns BIGINT columns as strings; everything is normalised here. */
export function fromCurrentRow(row: CurrentRow): StoredVersion {
  const deleted = Number(row.deleted) === 1 || row.deleted === true;
  return {
    rid: Number(row.rid),
    type: row.type as ResourceType,
    id: row.id,
    versionId: Number(row.version_id),
    lastUpdated: Number(row.last_updated),
    deleted,
    resource: row.content && !deleted ? (JSON.parse(row.content) as Resource) : undefined,
    text: row.content && !deleted ? row.content : undefined,
    createdBy: row.created_by,
    creatorOrg: row.creator_org,
  };
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
