import type { Resource } from 'fhir/r4';
import { definitions, hasContent, patientIdsOf, type ResourceType } from '../../resources';
import { deny, permit, type Decision } from '../consent/decision';
import type { AccessPolicy } from '../gate/policy';
import { indexReadsOf, type ResourceFilter } from '../search/filter';
import { matchesTokens } from '../search/match';
import { parseSearch } from '../search/parse';
import { compileFilter } from '../search/sql';
import type { AccessContext } from './context';
import { permissionFor, scopesFor, type Permission, type Scope } from './scopes';

/**
 * What the token's SMART scopes allow: the interaction's permission on the type, granular
 * restrictions (`?category=…`) on the resources themselves, and for `patient/` scopes the
 * compartment of the token's `patient`. Consent is decided separately; both must permit.
 */
export const scopePolicy: AccessPolicy = {
  allowsInteraction(ctx, type, interaction) {
    const permission = permissionFor(interaction);
    if (scopesFor(ctx.scopes, type, permission).length === 0) {
      return deny('insufficient-scope', `no granted scope allows ${interaction} (${permission}) on ${type}`);
    }
    return permit('scope', `a scope allows ${interaction} on ${type}`);
  },

  async canRead(ctx, versions, purpose) {
    // The content is parsed only if a scope restricts by it (see store/records.ts).
    return versions.map((v) => decide(ctx, v.type, hasContent(v) ? { id: v.id, resource: () => v.resource!, patients: () => patientIdsOf(v) } : undefined, purpose.permission));
  },

  async canWrite(ctx, type, before, after, permission) {
    for (const resource of [before?.resource, after]) {
      if (!resource) continue;
      const d = decide(ctx, type, { id: resource.id, resource: () => resource, patients: () => definitions[type].patientIds(resource) }, permission);
      if (d.effect === 'deny') return d;
    }
    return before || after ? permit('scope', 'a scope allows this write') : decide(ctx, type, undefined, permission);
  },

  searchFilter(ctx, type) {
    const scopes = scopesFor(ctx.scopes, type, 's');
    if (scopes.length === 0) return undefined;
    // Only when every applicable scope restricts can the restriction go into SQL.
    const parts: ResourceFilter[] = [];
    for (const s of scopes) {
      const f = filterOf(ctx, type, s);
      if (!f) return undefined;
      parts.push(f);
    }
    return { where: parts.map((p) => `(${p.where})`).join(' OR '), params: parts.flatMap((p) => [...p.params]), ...indexReadsOf(parts) };
  },
};

/** The resource a scope decision is about: its content and patients, read only if a scope restricts by them. */
interface ScopeTarget {
  readonly id?: string;
  resource(): Resource;
  patients(): readonly string[];
}

function decide(ctx: AccessContext, type: ResourceType, target: ScopeTarget | undefined, permission: Permission): Decision {
  const scopes = scopesFor(ctx.scopes, type, permission);
  if (scopes.length === 0) return deny('insufficient-scope', `no granted scope allows ${permission} on ${type}`);
  let reason: Decision | undefined;
  for (const s of scopes) {
    if (s.level === 'patient') {
      if (!ctx.patient) {
        reason = deny('outside-patient-compartment', 'a patient/ scope needs a patient in the token');
        continue;
      }
      if (target && !target.patients().includes(ctx.patient)) {
        reason = deny('outside-patient-compartment', `${type}/${target.id ?? '(new)'} is not in the compartment of Patient/${ctx.patient}`);
        continue;
      }
    }
    if (s.query && target && !matchesTokens(type, target.resource(), s.query)) {
      reason = deny('granular-scope', `${type}/${target.id ?? '(new)'} does not match the scope's ${new URLSearchParams(s.query as [string, string][]).toString()}`);
      continue;
    }
    return permit('scope', `allowed by ${s.level}/${s.type}`);
  }
  return reason!;
}

/** The SQL form of one scope's restriction, or undefined when it restricts nothing. */
function filterOf(ctx: AccessContext, type: ResourceType, s: Scope): ResourceFilter | undefined {
  const pairs: [string, string][] = [...(s.query ?? [])];
  // Search ignores an empty parameter; a restriction by one grants nothing (see matchesTokens).
  if (pairs.some(([, v]) => v === '')) return { where: '1 = 0', params: [], indexParams: [] };
  if (s.level === 'patient') {
    if (!ctx.patient) return { where: '1 = 0', params: [], indexParams: [] };
    pairs.push(type === 'Patient' ? ['_id', ctx.patient] : ['patient', `Patient/${ctx.patient}`]);
  }
  if (pairs.length === 0) return undefined;
  const parsed = parseSearch(type, pairs, { strict: true, defaultCount: 1, maxCount: 1, baseUrl: '', now: Date.now() });
  return compileFilter(parsed.criteria, Date.now(), { drive: false });
}
