import fs from 'node:fs';
import path from 'node:path';
import type { CodeSystem, CodeSystemConcept } from 'fhir/r4';
import { profilesDir } from '../profiles-dir';

/** v3-ActReason, the code system purposes of use come from. */
export const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const ACT_REASON_OID = 'urn:oid:2.16.840.1.113883.5.8';

/** The purpose a token gets when the client asks for none. */
export const DEFAULT_PURPOSE = 'TREAT';

let codes: Set<string> | undefined;
const parents = new Map<string, string>();

/** Every code of v3-ActReason (profiles/r4/CodeSystem-v3-ActReason.json). */
export function actReasonCodes(): ReadonlySet<string> {
  if (!codes) {
    const cs = JSON.parse(fs.readFileSync(path.join(profilesDir(), 'r4', 'CodeSystem-v3-ActReason.json'), 'utf8')) as CodeSystem;
    codes = new Set();
    const walk = (list: CodeSystemConcept[] | undefined, parent?: string) => {
      for (const c of list ?? []) {
        if (!c.code.startsWith('_')) codes!.add(c.code);
        if (parent) parents.set(c.code, parent);
        walk(c.concept, c.code);
      }
    };
    walk(cs.concept);
  }
  return codes;
}

/**
 * True when `code` is `ancestor` or one of its descendants in the v3-ActReason hierarchy
 * (HQUALIMP is a kind of HOPERAT; BTG a kind of ETREAT, itself a kind of TREAT).
 */
export function isA(code: string, ancestor: string): boolean {
  actReasonCodes();
  for (let c: string | undefined = code; c; c = parents.get(c)) if (c === ancestor) return true;
  return false;
}

/**
 * A purpose of use as a client may send it: a bare v3-ActReason code (`TREAT`), or
 * `system#code` with the HL7 OID (`urn:oid:2.16.840.1.113883.5.8#TREAT`, the HL7 B2B form) or
 * the code system URL. Returns the code, or null when it is not a v3-ActReason code.
 */
export function parsePurpose(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  let code = value.trim();
  const hash = code.lastIndexOf('#');
  if (hash >= 0) {
    const system = code.slice(0, hash);
    if (system !== ACT_REASON_OID && system !== ACT_REASON) return null;
    code = code.slice(hash + 1);
  } else if (code.includes('|')) {
    const [system, c] = code.split('|');
    if (system !== ACT_REASON) return null;
    code = c;
  }
  return actReasonCodes().has(code) ? code : null;
}
