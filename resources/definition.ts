import type { Resource } from 'fhir/r4';

/** The resource types Custodian serves. */
export const RESOURCE_TYPES = ['Patient', 'Consent', 'AuditEvent'] as const;
export type ResourceType = (typeof RESOURCE_TYPES)[number];

export function isResourceType(value: string): value is ResourceType {
  return (RESOURCE_TYPES as readonly string[]).includes(value);
}

/** FHIR restful interactions (http://hl7.org/fhir/R4/valueset-type-restful-interaction.html). */
export type Interaction =
  | 'read'
  | 'vread'
  | 'update'
  | 'patch'
  | 'delete'
  | 'history-instance'
  | 'history-type'
  | 'create'
  | 'search-type';

/**
 * The revision of the patientIds functions below (and of what they call: patientIdOf,
 * parseRelativeReference). A row keeps its patients under the revision that worked them out,
 * and is read by it only under the same one: any change to what a patientIds returns must bump
 * this, and rows kept under an earlier revision are then parsed for their patients.
 */
export const PATIENT_IDS_REVISION = 1;

/**
 * What the server needs to know about one resource type: which interactions it allows,
 * how a resource links to a patient (the consent gate decides per patient), the profile it
 * must meet, and the code systems of its `code`-typed search parameters.
 */
export interface ResourceDefinition {
  readonly type: ResourceType;
  readonly interactions: readonly Interaction[];
  /** Canonical URL of the Custodian profile every instance must satisfy (in `profiles/`). */
  readonly profile: string;
  /**
   * Ids of the local Patients whose compartment the resource is in. Current rows keep what this
   * returned when they were written (`resources.patients`, see store/records.ts), under
   * PATIENT_IDS_REVISION: a change here must come with a new revision.
   */
  patientIds(resource: Resource): string[];
  /**
   * For token parameters over plain `code` elements, the code system the element is bound
   * to, so `gender=http://hl7.org/fhir/administrative-gender|male` matches.
   */
  readonly codeSystems: Readonly<Record<string, string>>;
  /**
   * Reference and date search parameters indexed together, one row per (reference, date) pair
   * (`idx_ref_date`, server/store/index-rows.ts), so a search on one reference value and a date
   * range reads one index range in date order instead of probing every referencing resource's
   * date row (server/search/sql.ts). The date parameter must have at most one value per
   * resource: the search takes a pair's date as the resource's date, for filtering and sorting.
   */
  readonly referenceDatePairs?: readonly ReferenceDatePair[];
}

/** See ResourceDefinition.referenceDatePairs. */
export interface ReferenceDatePair {
  readonly reference: string;
  readonly date: string;
}

/** The index parameter code of a reference-date pair (its key in `idx_ref_date`, through paramId). */
export function pairCode(pair: ReferenceDatePair): string {
  return `${pair.reference}+${pair.date}`;
}

/** A relative reference `Type/id[/_history/vid]` split into its parts; null for anything else. */
export function parseRelativeReference(reference: string | undefined): { type: string; id: string; version?: string } | null {
  if (!reference) return null;
  const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([A-Za-z0-9\-.]{1,64}))?$/.exec(reference);
  if (!m) return null;
  return m[3] ? { type: m[1], id: m[2], version: m[3] } : { type: m[1], id: m[2] };
}

/** The local Patient id a Reference points at, or undefined (absolute, contained, logical, other type). */
export function patientIdOf(ref: { reference?: string } | undefined): string | undefined {
  const parsed = parseRelativeReference(ref?.reference);
  return parsed && parsed.type === 'Patient' ? parsed.id : undefined;
}
