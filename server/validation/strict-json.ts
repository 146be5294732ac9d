import { FhirError } from '../errors';

/**
 * How deep objects and arrays may nest. Every FHIR resource of the shared material (R4, UK Core,
 * BALP, Synthea) nests at most 19 deep; validation, indexing and the consent engine walk
 * resources recursively, and a few thousand levels overflowed the stack (a 500).
 */
export const MAX_JSON_DEPTH = 100;

/**
 * JSON.parse, plus the one rule of FHIR JSON it cannot see: "properties SHALL NOT appear more
 * than once" (http://hl7.org/fhir/R4/json.html). JSON.parse keeps the last of two equal keys, so
 * `{"gender":"male","gender":"female"}` would be stored as female with no word to the client.
 * Throws `invalid-json` (400) naming the property and where it is; also for nesting deeper
 * than MAX_JSON_DEPTH.
 */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FhirError('invalid-json', `The body is not well-formed JSON: ${(err as Error).message}`);
  }
  if (jsonDepth(text) > MAX_JSON_DEPTH) {
    throw new FhirError('invalid-json', `The body nests objects and arrays more than ${MAX_JSON_DEPTH} levels deep`);
  }
  const duplicate = firstDuplicateKey(text);
  if (duplicate) {
    const type = (value as { resourceType?: unknown } | null)?.resourceType;
    const path = typeof type === 'string' && /^[A-Z][A-Za-z]+$/.test(type) ? `${type}.${duplicate.path}` : duplicate.path;
    throw new FhirError('invalid-json', `Property '${duplicate.key}' appears more than once in one object (${path}); FHIR JSON allows each property once`, {
      expression: [path],
    });
  }
  return value;
}

/** The deepest nesting of objects and arrays in well-formed JSON `text`. */
export function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) max = depth;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

interface Frame {
  readonly keys?: Set<string>; // objects
  index: number; // arrays: the current item
  key?: string; // objects: the current property
}

/**
 * The first key that repeats within one object of `text`, with its location (`name[0].family`).
 * `text` is well-formed JSON (JSON.parse accepted it), so one linear pass over the tokens that
 * matter — strings, braces, brackets, commas, colons — is enough.
 */
export function firstDuplicateKey(text: string): { key: string; path: string } | undefined {
  const stack: Frame[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (; j < text.length; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j++;
        } else if (d === 0x22) break;
      }
      if (expectKey) {
        const raw = text.slice(i + 1, j);
        const key = escaped ? (JSON.parse(`"${raw}"`) as string) : raw;
        const top = stack[stack.length - 1];
        if (top.keys!.has(key)) return { key, path: pathOf(stack.slice(0, -1), key) };
        top.keys!.add(key);
        top.key = key;
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      stack.push({ keys: new Set(), index: 0 });
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      stack.push({ index: 0 });
      expectKey = false;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top.keys) expectKey = true;
      else top.index++;
    }
  }
  return undefined;
}

function pathOf(frames: Frame[], last: string): string {
  let out = '';
  for (const f of frames) out += f.keys ? (out ? `.${f.key}` : f.key ?? '') : `[${f.index}]`;
  return out ? `${out}.${last}` : last;
}
