import type { Resource } from 'fhir/r4';
import type { Interaction, ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import type { Permission } from '../access/scopes';
import { permit, type Decision } from '../consent/decision';
import type { PolicyData } from '../consent/policy';
import { indexReadsOf, type ResourceFilter } from '../search/filter';
import type { StoredVersion } from '../store/records';

/** Why content is being read: the scope permission that covers it, and the consent action. */
export interface ReadPurpose {
  /** `r` for read/vread/instance history, `s` for search and type/system history, or the write permission when reading for a write. */
  readonly permission: Permission;
  /** `access` for ordinary reads, `disclose` for exports. */
  readonly action: 'access' | 'disclose';
}

export type SystemInteraction = Interaction | 'history-system' | 'operation';

/**
 * The gate's questions: may this context use this interaction on this type at all, may it see
 * these versions, may it make this write? Implementations load what they need (Patients,
 * Consents) and answer with Decisions.
 */
export interface AccessPolicy {
  allowsInteraction(ctx: AccessContext, type: ResourceType, interaction: SystemInteraction): Decision;
  /** `view`: inside a write transaction, the transaction's own view of patients and Consents. */
  canRead(ctx: AccessContext, versions: readonly StoredVersion[], purpose: ReadPurpose, view?: PolicyData): Promise<Decision[]>;
  canWrite(ctx: AccessContext, type: ResourceType, before: StoredVersion | undefined, after: Resource | undefined, permission: Permission, view?: PolicyData): Promise<Decision>;
  /** A restriction to add to this context's searches (pushed into SQL so pages fill fast); canRead still decides. */
  searchFilter?(ctx: AccessContext, type: ResourceType): ResourceFilter | undefined;
}

/** Permits everything; the inner policy until the consent engine replaces it. */
export const openAccessPolicy: AccessPolicy = {
  allowsInteraction: () => permit('open-access', 'no access policy configured'),
  async canRead(_ctx, versions) {
    return versions.map(() => permit('open-access', 'no access policy configured'));
  },
  async canWrite() {
    return permit('open-access', 'no access policy configured');
  },
};

/**
 * Deny-overrides across policies: an interaction, read or write is allowed only when every
 * policy permits it; the first deny (in the given order) is the answer.
 */
export function allOf(...policies: AccessPolicy[]): AccessPolicy {
  return {
    allowsInteraction(ctx, type, interaction) {
      let last: Decision | undefined;
      for (const p of policies) {
        last = p.allowsInteraction(ctx, type, interaction);
        if (last.effect === 'deny') return last;
      }
      return last!;
    },
    async canRead(ctx, versions, purpose, view) {
      const decisions: Decision[] = versions.map(() => permit('open-access', 'no policy'));
      let pending = versions.map((_, i) => i);
      // Versions a granular scope refused for their content, and by which policy: see below.
      const byContent = new Map<number, number>();
      for (const [at, p] of policies.entries()) {
        if (pending.length === 0) break;
        const answers = await p.canRead(ctx, pending.map((i) => versions[i]), purpose, view);
        const next: number[] = [];
        answers.forEach((d, k) => {
          decisions[pending[k]] = d;
          if (d.effect === 'permit') next.push(pending[k]);
          else if (d.reason === 'granular-scope') byContent.set(pending[k], at);
        });
        pending = next;
      }
      // A granular scope's refusal says what the data is not (`?identifier=…` a patient's NHS
      // number does not match): a client choosing the filter would read hidden data one fact a
      // request, its refusals differing from those of data hidden from it. So such a refusal
      // stands only where every later policy permits the read; where one refuses, its refusal
      // is the answer, as it is for data that does match the filter.
      const refusedBy = new Map<number, number[]>();
      for (const [i, at] of byContent) refusedBy.set(at, [...(refusedBy.get(at) ?? []), i]);
      for (const [at, refused] of refusedBy) {
        let open = refused;
        for (const p of policies.slice(at + 1)) {
          if (open.length === 0) break;
          const answers = await p.canRead(ctx, open.map((i) => versions[i]), purpose, view);
          const next: number[] = [];
          answers.forEach((d, k) => {
            if (d.effect === 'deny') decisions[open[k]] = d;
            else next.push(open[k]);
          });
          open = next;
        }
      }
      return decisions;
    },
    async canWrite(ctx, type, before, after, permission, view) {
      let last: Decision | undefined;
      for (const p of policies) {
        last = await p.canWrite(ctx, type, before, after, permission, view);
        if (last.effect === 'deny') return last;
      }
      return last!;
    },
    searchFilter(ctx, type) {
      const filters = policies.map((p) => p.searchFilter?.(ctx, type)).filter((f): f is ResourceFilter => f !== undefined);
      if (filters.length === 0) return undefined;
      return { where: filters.map((f) => `(${f.where})`).join(' AND '), params: filters.flatMap((f) => [...f.params]), ...indexReadsOf(filters) };
    },
  };
}
