import type { AccessContext } from '../access/context';
import type { PolicyData } from '../consent/policy';
import type { LinkCheck } from '../search/filter';
import { paramId } from '../search/param-id';
import type { StoreReader } from '../store/read';
import type { StoredVersion } from '../store/records';
import type { AccessPolicy, ReadPurpose } from './policy';

/**
 * Chained and `_has` criteria, checked over what the asker may see
 * (http://hl7.org/fhir/R4/search.html#chaining, #has).
 *
 * The search SQL narrows candidates through the link over all resources; here a candidate is
 * kept only if the link holds through a resource this context may see. Without this,
 * `Consent?patient.identifier=<NHS number>` would tell a client that a hidden Patient has that
 * NHS number, and `Patient?_has:Consent:actor=<org>` would reveal Consents it may not see.
 */
export async function linksHold(
  reader: StoreReader,
  policy: AccessPolicy,
  ctx: AccessContext,
  view: PolicyData | undefined,
  candidates: readonly StoredVersion[],
  checks: readonly LinkCheck[],
): Promise<boolean[]> {
  let ok = candidates.map(() => true);
  const purpose: ReadPurpose = { permission: 's', action: 'access' };
  const visible = async (versions: StoredVersion[]) => {
    const decisions = await policy.canRead(ctx, versions, purpose, view);
    return versions.filter((_, i) => decisions[i].effect === 'permit');
  };
  for (const check of checks) {
    const pending = candidates.filter((_, i) => ok[i]);
    if (pending.length === 0) break;
    let holds: Set<number>;
    if (check.kind === 'chain') {
      // Each candidate's references under the parameter, then which targets match and are visible.
      const refs = await reader.referencesOf(paramId(check.param.resourceType, check.param.code), pending.map((v) => v.rid));
      const reachable = new Set<string>();
      for (const target of check.targets) {
        const ids = [...new Set(refs.filter((r) => r.ref.startsWith(`${target.type}/`)).map((r) => r.ref.slice(target.type.length + 1)))];
        if (ids.length === 0) continue;
        for (const v of await visible(await reader.currentMatching(target.type, ids, target.filter))) reachable.add(`${v.type}/${v.id}`);
      }
      holds = new Set(refs.filter((r) => reachable.has(r.ref)).map((r) => r.rid));
    } else {
      // Sources matching the inner criterion that point at a candidate, kept if visible.
      const viaPid = paramId(check.source, check.via.code);
      const keys = pending.map((v) => `${v.type}/${v.id}`);
      const sources = await visible(await reader.referencingMatching(check.source, viaPid, keys, check.filter));
      const pointed = new Set((await reader.referencesOf(viaPid, sources.map((s) => s.rid))).map((r) => r.ref));
      holds = new Set(pending.filter((v) => pointed.has(`${v.type}/${v.id}`)).map((v) => v.rid));
    }
    ok = candidates.map((v, i) => ok[i] && holds.has(v.rid));
  }
  return ok;
}
