import type Ajv from 'ajv';
import type { AnySchemaObject } from 'ajv';

/**
 * What the published R4 JSON schema (`profiles/r4/fhir.schema.json`) does not say, or says in a
 * way JavaScript reads differently, and FHIR requires of JSON
 * (http://hl7.org/fhir/R4/json.html, http://hl7.org/fhir/R4/datatypes.html). Applied to the
 * schema as it is loaded, so the file stays byte-for-byte the HL7 one; the list and the reasons
 * are in `profiles/README.md` ("Adjustments to the R4 JSON schema").
 *
 * 1. Structure: the complex-type, backbone-element and resource definitions carry no
 *    `"type": "object"`, so `"managingOrganization": 5` or `"name": ["x"]` passed (JSON Schema
 *    applies `properties` only to objects). Every definition with properties now requires an
 *    object; `xhtml` a string.
 * 2. null: FHIR JSON has no null values, with one exception: in a repeating primitive and its
 *    `_element` array, null fills the positions that have no value (or no extensions) so the two
 *    arrays line up. Items of those arrays may be null here; `checkSafety` checks the pairing.
 * 3. Primitives as JSON types: integer, positiveInt and unsignedInt are whole numbers in their
 *    32-bit ranges (the schema's regexes apply only to strings, so `1.5` and `-3` passed as
 *    positiveInt); every string primitive is non-empty (`uri`'s `^\S*$` allowed `""`) and at most
 *    1 MB; dates are real calendar dates (`2020-02-30` matched the regex).
 * 4. Regexes JavaScript reads differently: `string` and `markdown`'s `[ \r\n\t\S]+` was written
 *    for XML Schema, where `\s` is four characters; in JavaScript `\S` also excludes no-break and
 *    other Unicode spaces, so "Mary\u00a0Jane" was refused. Control characters are refused for
 *    every string by `checkSafety` instead. The inline base64Binary regex
 *    `^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$` backtracks exponentially on whitespace (twenty groups took
 *    over a minute); it is replaced by an equivalent linear one.
 * 5. Choice types: at most one `value[x]` (`deceased[x]`, …) per element; the schema lists each
 *    type's property separately and so allowed `valueString` with `valueInteger`.
 * 6. Contained resources (`ResourceList`) are chosen by their `resourceType`, like the top level.
 * 7. Extensions: ext-1, "must have either extensions or value[x], not both", which the schema
 *    cannot say and the StructureDefinitions of our types do not reach (Extension is a datatype).
 */
export function adjustSchema(schema: Record<string, unknown>): void {
  const definitions = schema.definitions as Record<string, AnySchemaObject>;
  const typeNames = new Set(Object.keys(definitions));
  const byPattern = new Map<string, string>();
  for (const [name, def] of Object.entries(definitions)) if (typeof def.pattern === 'string') byPattern.set(def.pattern, name);
  const primitive = (s: AnySchemaObject): string | undefined => {
    const ref = typeof s.$ref === 'string' ? /^#\/definitions\/([a-z][A-Za-z0-9]*)$/.exec(s.$ref)?.[1] : undefined;
    if (ref && definitions[ref] && !definitions[ref].properties) return ref;
    if (Array.isArray(s.enum)) return 'code';
    return typeof s.pattern === 'string' ? byPattern.get(s.pattern) ?? (s.pattern === LEGACY_BASE64 ? 'base64Binary' : undefined) : undefined;
  };

  for (const [name, def] of Object.entries(definitions)) {
    if (def.properties) {
      def.type = 'object';
      for (const [prop, s] of Object.entries(def.properties as Record<string, AnySchemaObject>)) {
        adjustPrimitive(s, primitive(s));
        if (s.type === 'array' && s.items) {
          const items = s.items as AnySchemaObject;
          adjustPrimitive(items, primitive(items));
          // The one place FHIR JSON has null: gaps in a repeating primitive and its `_` twin.
          const nullable = prop.startsWith('_') ? items.$ref === '#/definitions/Element' : primitive(items) !== undefined;
          if (nullable) s.items = { anyOf: [items, { type: 'null' }] };
        }
      }
      const groups = choiceGroups(def.properties as Record<string, AnySchemaObject>, typeNames);
      if (Object.keys(groups).length) def.fhirChoice = groups;
      if (name === 'Extension') def.fhirExt1 = groups.value;
    } else if (name === 'ResourceList') {
      // Contained and Bundle resources: picked by resourceType, as the top level is, rather than
      // tried against all 146 resource definitions (which reported every one's errors).
      Object.assign(def, { type: 'object', required: ['resourceType'], discriminator: { propertyName: 'resourceType' } });
    } else if (name === 'xhtml') {
      def.type = 'string';
      def.minLength = 1;
    } else {
      adjustPrimitive(def, name);
    }
  }
}

const LEGACY_BASE64 = '^(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+$';
/** The same language as LEGACY_BASE64 (groups of four, whitespace between groups), matched in linear time. */
const BASE64 = '^(\\s*[0-9a-zA-Z+/=]{4})+\\s*$';

const INTEGER_RANGES: Record<string, [number, number]> = {
  integer: [-2147483648, 2147483647],
  positiveInt: [1, 2147483647],
  unsignedInt: [0, 2147483647],
};

/** FHIR strings are at most 1 MB (http://hl7.org/fhir/R4/datatypes.html#string). */
const MAX_STRING = 1024 * 1024;

function adjustPrimitive(s: AnySchemaObject, type: string | undefined): void {
  if (!type) return;
  if (type in INTEGER_RANGES) {
    s.type = 'integer';
    [s.minimum, s.maximum] = INTEGER_RANGES[type];
    delete s.pattern;
    return;
  }
  if (s.type !== 'string') return;
  s.minLength = 1;
  s.maxLength = MAX_STRING;
  if (type === 'string' || type === 'markdown') delete s.pattern;
  if (type === 'base64Binary' && s.pattern === LEGACY_BASE64) s.pattern = BASE64;
  if (type === 'date' || type === 'dateTime' || type === 'instant') s.fhirDate = true;
}

/**
 * The choice-type groups of a definition: properties named `<name><Type>`, where Type is a FHIR
 * datatype, that share their description (the schema generator gives every type of one
 * `name[x]` element that element's description).
 */
function choiceGroups(properties: Record<string, AnySchemaObject>, typeNames: ReadonlySet<string>): Record<string, string[]> {
  const groups = new Map<string, { name: string; props: string[] }>();
  for (const [prop, s] of Object.entries(properties)) {
    for (let i = 1; i < prop.length; i++) {
      const suffix = prop.slice(i);
      if (!/^[A-Z]/.test(suffix) || !(typeNames.has(suffix) || typeNames.has(suffix[0].toLowerCase() + suffix.slice(1)))) continue;
      const name = prop.slice(0, i);
      const key = `${name}\u0000${String(s.description ?? '')}`;
      const group = groups.get(key) ?? { name, props: [] };
      group.props.push(prop);
      groups.set(key, group);
      break;
    }
  }
  return Object.fromEntries([...groups.values()].filter((g) => g.props.length > 1).map((g) => [g.name, g.props]));
}

/** The keywords the adjustments use, for an Ajv instance that compiles the adjusted schema. */
export function addFhirKeywords(ajv: Ajv): void {
  ajv.addKeyword({
    keyword: 'fhirDate',
    type: 'string',
    schemaType: 'boolean',
    validate: (_schema: boolean, data: string) => isRealDate(data),
    errors: false,
  });
  ajv.addKeyword({
    keyword: 'fhirChoice',
    type: 'object',
    schemaType: 'object',
    validate: (groups: Record<string, string[]>, data: Record<string, unknown>) => choiceConflicts(groups, data).length === 0,
    errors: false,
  });
  ajv.addKeyword({
    keyword: 'fhirExt1',
    type: 'object',
    schemaType: 'array',
    validate: (valueProps: string[], data: Record<string, unknown>) => isExt1(valueProps, data),
    errors: false,
  });
}

/** ext-1: an extension carries nested extensions or a value, exactly one of the two. */
export function isExt1(valueProps: readonly string[], data: Record<string, unknown>): boolean {
  return (data.extension !== undefined) !== valueProps.some((p) => data[p] !== undefined);
}

/** The choice elements of `data` given more than one type: `[['deceased', ['deceasedBoolean', 'deceasedDateTime']]]`. */
export function choiceConflicts(groups: Record<string, string[]>, data: Record<string, unknown>): [string, string[]][] {
  const out: [string, string[]][] = [];
  for (const [name, props] of Object.entries(groups)) {
    const present = props.filter((p) => p in data);
    if (present.length > 1) out.push([name, present]);
  }
  return out;
}

/** A date, dateTime or instant (already matching its regex) names a day that exists. */
export function isRealDate(value: string): boolean {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?/.exec(value);
  if (!m || m[3] === undefined) return true;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  return days !== undefined && day >= 1 && day <= days;
}
