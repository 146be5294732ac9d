import type { Resource } from 'fhir/r4';
import type { ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { permit, type Decision } from '../consent/decision';
import type { StoredVersion } from '../store/records';

/** What a read is for: the consent engine distinguishes `access` from `disclose` (exports). */
export type ReadAction = 'access' | 'disclose';

/**
 * The gate's question to the policy: may this context see these versions / make this write?
 * Implementations load whatever they need (Patients, Consents) and return one Decision each.
 */
export interface AccessPolicy {
  canRead(ctx: AccessContext, versions: readonly StoredVersion[], action: ReadAction): Promise<Decision[]>;
  canWrite(ctx: AccessContext, type: ResourceType, before: StoredVersion | undefined, after: Resource | undefined): Promise<Decision>;
}

/**
 * Permits everything. The foundation's policy while no client identity exists; the consent
 * engine replaces it.
 */
export const openAccessPolicy: AccessPolicy = {
  async canRead(_ctx, versions) {
    return versions.map(() => permit('open-access', 'no access policy configured'));
  },
  async canWrite() {
    return permit('open-access', 'no access policy configured');
  },
};
