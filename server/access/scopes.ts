import { RESOURCE_TYPES, type Interaction, type ResourceType } from '../../resources';

/**
 * SMART on FHIR scopes, v1 (`system/Patient.read`, `patient/*.write`) and v2
 * (`system/Patient.rs`, `user/Consent.cruds?category=…`), parsed into one shape
 * (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
 */
export type ScopeLevel = 'patient' | 'user' | 'system';
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';
const ORDER: readonly Permission[] = ['c', 'r', 'u', 'd', 's'];

export interface Scope {
  readonly level: ScopeLevel;
  /** A resource type, or `*`. */
  readonly type: ResourceType | '*';
  readonly permissions: ReadonlySet<Permission>;
  /** Granular restriction (`?category=system|code`), as [name, value] pairs. */
  readonly query?: readonly [string, string][];
  /** Written in the v1 form (read/write/*). */
  readonly v1: boolean;
}

const V1: Record<string, Permission[]> = { read: ['r', 's'], write: ['c', 'u', 'd'], '*': ['c', 'r', 'u', 'd', 's'] };

const parsed = new Map<string, Scope | null>();

/** Parses one scope string (memoised: tokens repeat the same few); null when it is not a resource scope this server understands. */
export function parseScope(text: string): Scope | null {
  let s = parsed.get(text);
  if (s === undefined) {
    s = parseScopeText(text);
    if (parsed.size < 10000) parsed.set(text, s);
  }
  return s;
}

function parseScopeText(text: string): Scope | null {
  const m = /^(patient|user|system)\/([A-Za-z]+|\*)\.(read|write|\*|[cruds]+)(\?.+)?$/.exec(text);
  if (!m) return null;
  const [, level, type, perms, query] = m;
  if (type !== '*' && !(RESOURCE_TYPES as readonly string[]).includes(type)) return null;
  let permissions: Permission[];
  let v1 = false;
  if (perms in V1) {
    if (query) return null; // granular scopes are a v2 feature
    permissions = V1[perms];
    v1 = true;
  } else {
    permissions = perms.split('') as Permission[];
    // v2 requires the letters in c, r, u, d, s order, each at most once
    const indexes = permissions.map((p) => ORDER.indexOf(p));
    if (indexes.some((x, i) => i > 0 && x <= indexes[i - 1])) return null;
  }
  const pairs = query ? [...new URLSearchParams(query.slice(1)).entries()] : undefined;
  if (pairs && pairs.length === 0) return null;
  return { level: level as ScopeLevel, type: type as ResourceType | '*', permissions: new Set(permissions), query: pairs, v1 };
}

/** The scope as a string (v1 form where it was written so and still fits). */
export function formatScope(s: Scope): string {
  const letters = ORDER.filter((p) => s.permissions.has(p)).join('');
  let perms = letters;
  if (s.v1 && !s.query) {
    const v1 = Object.entries(V1).find(([, ps]) => ps.join('') === letters || ps.slice().sort().join('') === letters.split('').sort().join(''));
    if (v1) perms = v1[0];
  }
  const q = s.query ? '?' + new URLSearchParams(s.query as [string, string][]).toString() : '';
  return `${s.level}/${s.type}.${perms}${q}`;
}

function sameQuery(a?: readonly [string, string][], b?: readonly [string, string][]): boolean {
  return JSON.stringify([...(a ?? [])].sort()) === JSON.stringify([...(b ?? [])].sort());
}

/** The part of `requested` that `registered` allows, or null if nothing. */
export function intersect(requested: Scope, registered: Scope): Scope | null {
  if (requested.level !== registered.level) return null;
  let type: ResourceType | '*';
  if (requested.type === '*') type = registered.type;
  else if (registered.type === '*' || registered.type === requested.type) type = requested.type;
  else return null;
  const permissions = new Set([...requested.permissions].filter((p) => registered.permissions.has(p)));
  if (permissions.size === 0) return null;
  let query = requested.query;
  if (registered.query) {
    if (requested.query && !sameQuery(requested.query, registered.query)) return null;
    query = registered.query;
  }
  return { level: requested.level, type, permissions, query, v1: requested.v1 && !query && permissions.size === requested.permissions.size };
}

/** What a client may be granted: the intersection of what it asks for and what it is registered for. */
export function grant(requested: readonly string[], registered: readonly string[]): string[] {
  const reg = registered.map(parseScope).filter((s): s is Scope => s !== null);
  const out = new Set<string>();
  for (const text of requested) {
    const r = parseScope(text);
    if (!r) continue;
    for (const g of reg) {
      const i = intersect(r, g);
      if (i) out.add(formatScope(i));
    }
  }
  return [...out];
}

/** The permission letter an interaction needs (SMART v2 mapping). */
export function permissionFor(interaction: Interaction | 'history-system' | 'operation'): Permission {
  switch (interaction) {
    case 'create':
      return 'c';
    case 'read':
    case 'vread':
    case 'history-instance':
      return 'r';
    case 'update':
    case 'patch':
      return 'u';
    case 'delete':
      return 'd';
    case 'search-type':
    case 'history-type':
    case 'history-system':
      return 's';
    case 'operation':
      return 'r';
  }
}

/** The scopes of a context that allow `permission` on `type` (empty: not allowed at all). */
export function scopesFor(scopes: readonly string[], type: ResourceType, permission: Permission): Scope[] {
  return scopes
    .map(parseScope)
    .filter((s): s is Scope => s !== null && (s.type === '*' || s.type === type) && s.permissions.has(permission));
}

/**
 * Whether every scope of a context that lets it read any of `types` is a patient/ one: such a
 * token speaks for its patient only, whatever organisation or roles it also names (a portal's
 * identity provider may stamp its hospital on every token it issues). The record reviews
 * ($access-report, $sharing-summary, $access-decision, $delivery-status) ask it before taking the
 * caller for a custodian or an auditor.
 */
export function confinedToPatient(scopes: readonly string[], types: readonly ResourceType[]): boolean {
  return types.every((t) => scopesFor(scopes, t, 'r').every((s) => s.level === 'patient'));
}

/**
 * The patient the bearer of a token is, or undefined. A token's `patient` claim (trusted issuers)
 * names the patient the bearer is only in a patient-facing app's token, whose resource scopes are
 * all `patient/` ones; beside `user/` or `system/` scopes it is the launch context of a clinician's
 * app (the record open on screen), and the clinician is not that patient: they neither read the
 * record as the patient (Consent rule 1), nor write or review the patient's Consents as them. The
 * claim still confines `patient/` scopes to that patient's compartment (scope-policy.ts).
 */
export function bearerPatient(ctx: { readonly patient?: string; readonly scopes: readonly string[] }): string | undefined {
  if (ctx.patient === undefined) return undefined;
  let any = false;
  for (const text of ctx.scopes) {
    const s = parseScope(text);
    if (!s) continue;
    if (s.level !== 'patient') return undefined;
    any = true;
  }
  return any ? ctx.patient : undefined;
}
