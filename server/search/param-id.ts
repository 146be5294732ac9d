import { definitions, pairCode, RESOURCE_TYPES } from '../../resources';
import { matchesWords, wordPartParam } from './extract';
import { searchParams } from './parameters';

/**
 * The integer key of a search parameter in the index tables: FNV-1a of `Type.code`, 31 bits.
 * Deterministic, so every database and every process agrees without a lookup table; short, so
 * index keys stay small (every audited request writes ~20 index rows).
 */
export function paramId(type: string, code: string): number {
  let h = 0x811c9dc5;
  const s = `${type}.${code}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h & 0x7fffffff;
}

/**
 * Index parameters that are not search parameters themselves: identifier type + value for
 * `:of-type`, each token parameter's display/text for `:text`, the words of names and addresses
 * (extract.ts matchesWords), and the type's reference-date pairs (`idx_ref_date`).
 */
function pseudoParams(type: (typeof RESOURCE_TYPES)[number]): string[] {
  const tokens = [...searchParams(type).values()].filter((d) => d.type === 'token').map((d) => `${d.code}:text`);
  const words = [...searchParams(type).values()].filter(matchesWords).map((d) => wordPartParam(d.code));
  return ['identifier:of-type', ...tokens, ...words, ...(definitions[type].referenceDatePairs ?? []).map(pairCode)];
}

/** Fails at start-up if two parameters would share a key (none do today; a new one must not). */
export function assertNoParamIdCollisions(): void {
  const seen = new Map<number, string>();
  for (const type of RESOURCE_TYPES) {
    for (const code of [...searchParams(type).keys(), ...pseudoParams(type)]) {
      const id = paramId(type, code);
      const other = seen.get(id);
      if (other && other !== `${type}.${code}`) throw new Error(`search parameter ids collide: ${other} and ${type}.${code}`);
      seen.set(id, `${type}.${code}`);
    }
  }
}

const codes = new Map<string, Map<number, string>>();

/** The parameter code (or index pseudo-parameter) of an index key of `type`, for reports; undefined if none has it. */
export function paramCode(type: (typeof RESOURCE_TYPES)[number], id: number): string | undefined {
  let byId = codes.get(type);
  if (!byId) {
    byId = new Map([...searchParams(type).keys(), ...pseudoParams(type)].map((code) => [paramId(type, code), code]));
    codes.set(type, byId);
  }
  return byId.get(id);
}
