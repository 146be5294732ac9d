import fs from 'node:fs';
import path from 'node:path';
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import draft06 from 'ajv/dist/refs/json-schema-draft-06.json';
import type { OperationOutcomeIssue } from 'fhir/r4';
import { profilesDir } from '../profiles-dir';
import { pathExpression } from './paths';
import { addFhirKeywords, adjustSchema, choiceConflicts } from './schema-adjustments';

const SCHEMA_ID = 'http://hl7.org/fhir/json-schema/4.0';

/** Definition objects of the schema → FHIR type names (`Patient_Link` → `Patient.Link`), for messages. */
const DATATYPE_NAMES = new WeakMap<object, string>();

/**
 * The official FHIR R4 JSON schema (`profiles/r4/fhir.schema.json`), compiled with ajv once per
 * process: compiling takes 2-3 s, and the compiled functions are immutable, so every app and
 * test in the process shares them.
 */
class SchemaValidator {
  private readonly ajv: Ajv;
  private readonly byType = new Map<string, ValidateFunction>();

  constructor() {
    const schema = JSON.parse(fs.readFileSync(path.join(profilesDir(), 'r4', 'fhir.schema.json'), 'utf8')) as Record<string, unknown>;
    // ajv 8 needs the draft-06 meta-schema, `$id` instead of `id`, and no discriminator mapping
    // (see ../shared/fhir/README.md).
    schema.$id = schema.id;
    delete schema.id;
    delete (schema.discriminator as Record<string, unknown>).mapping;
    // What the published schema leaves out of FHIR JSON (profiles/README.md).
    adjustSchema(schema);
    for (const [name, def] of Object.entries(schema.definitions as Record<string, object>)) DATATYPE_NAMES.set(def, name.replace(/_/g, '.'));
    // strictNumbers: 1e400 parses to Infinity, which JSON cannot carry back out.
    this.ajv = new Ajv({ strict: false, discriminator: true, allErrors: true, verbose: true, strictNumbers: true });
    this.ajv.addMetaSchema(draft06);
    addFhirKeywords(this.ajv);
    this.ajv.addSchema(schema);
  }

  /** Issues for `resource` against the schema definition of its declared type. */
  validate(type: string, resource: unknown): OperationOutcomeIssue[] {
    let fn = this.byType.get(type);
    if (!fn) {
      fn = this.ajv.getSchema(`${SCHEMA_ID}#/definitions/${type}`);
      if (!fn) throw new Error(`no schema definition for ${type}`);
      this.byType.set(type, fn);
    }
    if (fn(resource)) return [];
    return describe(type, fn.errors ?? []);
  }
}

/** Turns ajv errors into OperationOutcome issues with FHIRPath locations, one per problem. */
function describe(type: string, errors: ErrorObject[]): OperationOutcomeIssue[] {
  const seen = new Set<string>();
  const issues: OperationOutcomeIssue[] = [];
  // Errors from inside a failing oneOf/anyOf branch (contained resources) repeat the parent's; keep the most specific.
  for (const err of errors) {
    if (err.keyword === 'oneOf' || err.keyword === 'anyOf' || err.keyword === 'if') continue;
    // The null branch of a repeating primitive's items: the value branch says what was wrong.
    if (err.keyword === 'type' && (err.params as { type?: unknown }).type === 'null') continue;
    let location = err.instancePath;
    let message: string;
    switch (err.keyword) {
      case 'additionalProperties': {
        const prop = String((err.params as { additionalProperty: string }).additionalProperty);
        location = `${location}/${prop}`;
        message = `Unrecognized property '${prop}'`;
        break;
      }
      case 'pattern':
        message = /^(\/contained\/\d+)?\/id$/.test(location)
          ? invalidId(String(valueAt(err)))
          : `Invalid value ${JSON.stringify(valueAt(err))}: does not match the FHIR format for this element`;
        break;
      case 'enum':
        message = `Invalid code ${JSON.stringify(valueAt(err))}: must be one of ${((err.params as { allowedValues: unknown[] }).allowedValues ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
        break;
      case 'const':
        message = `Must be ${JSON.stringify((err.params as { allowedValue: unknown }).allowedValue)}`;
        break;
      case 'type': {
        const data = valueAt(err);
        if (data === null) message = NULL_MESSAGE;
        else if (typeof data === 'number' && !Number.isFinite(data)) message = 'The number is out of range';
        else message = `Wrong JSON type: ${expected(err)}, found ${jsonType(data)}`;
        break;
      }
      case 'minimum':
      case 'maximum':
        message = `Invalid value ${JSON.stringify(valueAt(err))}: ${err.message}`;
        break;
      case 'minLength':
        message = 'Strings must not be empty in FHIR JSON; omit the property';
        break;
      case 'maxLength':
        message = 'FHIR strings are at most 1 MB (1,048,576 characters)';
        break;
      case 'discriminator':
        if ((valueAt(err) as { resourceType?: unknown }).resourceType === undefined) continue; // `required` says it
        message = `Unknown or missing resourceType ${JSON.stringify((valueAt(err) as { resourceType?: unknown } | null)?.resourceType)}`;
        location = `${location}/resourceType`;
        break;
      case 'fhirDate':
        message = `Invalid date ${JSON.stringify(valueAt(err))}: not a day of the calendar`;
        break;
      case 'fhirExt1':
        message = 'Constraint failed: ext-1: Must have either extensions or value[x], not both';
        break;
      case 'fhirChoice': {
        const [name, present] = choiceConflicts(err.schema as Record<string, string[]>, valueAt(err) as Record<string, unknown>)[0] ?? ['', []];
        location = `${location}/${name}`;
        message = `${name}[x] is a choice of types and takes one value, found ${present.join(' and ')}`;
        break;
      }
      case 'required':
        location = `${location}/${(err.params as { missingProperty: string }).missingProperty}`;
        message = 'Missing required property';
        break;
      default:
        message = err.message ?? err.keyword;
    }
    const expression = pathExpression(type, location);
    const key = `${expression}|${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    issues.push({ severity: 'error', code: err.keyword === 'additionalProperties' ? 'structure' : 'value', diagnostics: message, expression: [expression] });
  }
  return issues;
}

/** How a null that is not a gap in a repeating primitive is reported (here and by checkSafety). */
export const NULL_MESSAGE = 'null is not allowed in FHIR JSON: omit the property (null only marks a gap in a repeating primitive aligned with its "_" extensions)';

/** What the schema wanted, in FHIR's words: the datatype for a definition, else the JSON type. */
function expected(err: ErrorObject): string {
  const want = String((err.params as { type?: unknown }).type ?? '');
  const def = err.parentSchema ? DATATYPE_NAMES.get(err.parentSchema) : undefined;
  if (want === 'object' && def === 'ResourceList') return 'expected a JSON object (a resource)';
  if (want === 'object' && def) return `expected a JSON object (${def.includes('.') ? `the backbone element ${def}` : `a FHIR ${def}`})`;
  return `expected ${want === 'object' ? 'a JSON object' : want === 'array' ? 'a JSON array' : `a JSON ${want}`}`;
}

function jsonType(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return `${typeof value === 'number' ? 'the number' : `a ${typeof value}`} ${JSON.stringify(value).slice(0, 60)}`;
}

function invalidId(id: string): string {
  const problem = id.length > 64 ? `Too long (${id.length} chars)` : `Invalid Characters ('${id}')`;
  return `Invalid Resource id: ${problem}; ids are 1 to 64 of A-Z a-z 0-9 - .`;
}

function valueAt(err: ErrorObject): unknown {
  return (err as ErrorObject & { data?: unknown }).data;
}

let shared: SchemaValidator | undefined;

/** The process-wide compiled schema (immutable once built). */
export function schemaValidator(): SchemaValidator {
  return (shared ??= new SchemaValidator());
}
export type { SchemaValidator };
