import type { Parameters } from 'fhir/r4';
import { isResourceType, type ResourceType } from '../../resources';
import { FhirError } from '../errors';
import { isInstant, parseDateRange } from '../fhir/dates';

/** The kick-off parameters Custodian acts on. */
export interface ExportParameters {
  /** The types asked for; undefined: every type the client may search. */
  readonly types?: readonly ResourceType[];
  /** Only resources changed after this instant (ms). */
  readonly since?: number;
  /** What was ignored under `Prefer: handling=lenient`, for the manifest's error file. */
  readonly issues: readonly string[];
}

/** `_outputFormat` values the IG requires a server to accept for NDJSON. */
const NDJSON = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);
/** Kick-off parameters of the IG that Custodian does not offer. */
const UNSUPPORTED = new Set(['_typeFilter', '_elements', 'patient', 'includeAssociatedData', '_until']);
/** Parameters about the response format of the kick-off itself. */
const FORMAT = new Set(['_format', '_pretty']);

/**
 * Reads the kick-off request of a Bulk Data export
 * (https://hl7.org/fhir/uv/bulkdata/export.html#query-parameters): `_outputFormat` (NDJSON only),
 * `_since` (an instant), `_type` (comma-separated, repeatable). Malformed values are always a 400;
 * a type this server does not serve or a parameter it does not support is a 400 too, unless the
 * client sent `Prefer: handling=lenient`, when it is left out and reported in the manifest's
 * error file, as the IG allows.
 */
export function parseExportParameters(pairs: readonly [string, string][], lenient: boolean): ExportParameters {
  const issues: string[] = [];
  const refuse = (message: string, param: string): void => {
    if (!lenient) throw new FhirError('invalid-request', message, { expression: [param] });
    issues.push(`${message}; ignored under Prefer: handling=lenient`);
  };
  let since: number | undefined;
  let types: ResourceType[] | undefined;
  for (const [name, value] of pairs) {
    if (FORMAT.has(name)) continue;
    if (name === '_outputFormat') {
      if (!NDJSON.has(value)) throw new FhirError('invalid-request', `_outputFormat ${JSON.stringify(value)} is not supported: this server writes application/fhir+ndjson`, { expression: ['_outputFormat'] });
    } else if (name === '_since') {
      if (since !== undefined) throw new FhirError('invalid-request', '_since may be given once', { expression: ['_since'] });
      if (!isInstant(value)) throw new FhirError('invalid-request', `_since must be a FHIR instant such as 2026-01-31T12:00:00Z, not ${JSON.stringify(value)}`, { expression: ['_since'] });
      since = parseDateRange(value)!.lo;
    } else if (name === '_type') {
      types ??= [];
      for (const raw of value.split(',')) {
        const type = raw.trim();
        if (!type) throw new FhirError('invalid-request', '_type must list resource types separated by commas', { expression: ['_type'] });
        if (!isResourceType(type)) refuse(`_type ${type} is not exported by this server (Patient, Consent, AuditEvent)`, '_type');
        else if (!types.includes(type)) types.push(type);
      }
    } else if (UNSUPPORTED.has(name)) {
      refuse(`${name} is not supported by this server`, name);
    } else {
      refuse(`${name} is not a Bulk Data kick-off parameter`, name);
    }
  }
  if (types && types.length === 0) throw new FhirError('invalid-request', '_type names no resource type this server exports (Patient, Consent, AuditEvent)', { expression: ['_type'] });
  return { types, since, issues };
}

/** A POST kick-off's Parameters resource as name/value pairs (values of the primitive types the IG uses). */
export function parametersToPairs(body: unknown): [string, string][] {
  if (body === undefined) return [];
  const p = body as Parameters;
  if (!p || typeof p !== 'object' || p.resourceType !== 'Parameters') throw new FhirError('invalid-request', 'A POST kick-off takes a Parameters resource');
  return (p.parameter ?? []).map((x) => {
    const value = x.valueString ?? x.valueInstant ?? x.valueCode ?? x.valueUri ?? x.valueDateTime;
    if (value === undefined) throw new FhirError('invalid-request', `Parameter ${x.name} needs a string, code, uri or instant value`, { expression: [`Parameters.parameter.where(name='${x.name}')`] });
    return [x.name, value] as [string, string];
  });
}
