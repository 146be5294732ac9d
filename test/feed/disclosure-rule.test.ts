import assert from 'node:assert/strict';
import type { Consent } from 'fhir/r4';
import type { OrganizationRef, Role } from '../../server/access/context';
import { decide } from '../../server/consent/decide';
import type { DecisionRequest } from '../../server/consent/request';
import { nationalOptOut, ODS } from './fixtures';

const GP: OrganizationRef = { identifier: { system: ODS, value: 'GP1' } };
const RES: OrganizationRef = { identifier: { system: ODS, value: 'RES1' } };
const NOW = Date.UTC(2026, 5, 1);
const optOut = { ...(nationalOptOut('p1') as Consent), id: 'optout' };
const named: Consent = {
  resourceType: 'Consent',
  id: 'c1',
  status: 'active',
  scope: { coding: [{ code: 'patient-privacy' }] },
  category: [{ coding: [{ code: '59284-0' }] }],
  patient: { reference: 'Patient/p1' },
  provision: { type: 'permit', actor: [{ role: { text: 'recipient' }, reference: { identifier: RES.identifier } }] },
};

interface Case {
  title: string;
  type: 'Consent' | 'AuditEvent';
  org: OrganizationRef;
  roles?: Role[];
  purpose: string;
  action: 'access' | 'disclose';
  objected: boolean;
  expect: [string, string];
}

/**
 * Rule 3 for exports: a disclosure for secondary use leaves out a patient who objected, their
 * Consents and AuditEvents as well as their Patient; reads, the custodian's own operations and
 * national services are as before.
 */
const CASES: Case[] = [
  { title: 'a named organisation exporting for research does not get the Consents of a patient who opted out', type: 'Consent', org: RES, purpose: 'HRESCH', action: 'disclose', objected: true, expect: ['deny', 'national-opt-out'] },
  { title: 'reading the same Consent (access) is still the named organisation\'s', type: 'Consent', org: RES, purpose: 'HRESCH', action: 'access', objected: true, expect: ['permit', 'named-in-consent'] },
  { title: 'a patient without an objection: the named organisation\'s export includes the Consent', type: 'Consent', org: RES, purpose: 'HRESCH', action: 'disclose', objected: false, expect: ['permit', 'named-in-consent'] },
  { title: 'the custodian exporting for research leaves out the objector\'s Consents', type: 'Consent', org: GP, purpose: 'HRESCH', action: 'disclose', objected: true, expect: ['deny', 'national-opt-out'] },
  { title: 'the custodian exporting for its own operations keeps them', type: 'Consent', org: GP, purpose: 'HOPERAT', action: 'disclose', objected: true, expect: ['permit', 'custodian'] },
  { title: 'the custodian exporting for direct care keeps them (not secondary use)', type: 'Consent', org: GP, purpose: 'TREAT', action: 'disclose', objected: true, expect: ['permit', 'custodian'] },
  { title: 'a national service exporting Consents for public health gets every one of them', type: 'Consent', org: RES, roles: ['national-service'], purpose: 'PUBHLTH', action: 'disclose', objected: true, expect: ['permit', 'national-service'] },
  { title: 'the custodian exporting the audit trail for research leaves out the objector\'s events', type: 'AuditEvent', org: GP, purpose: 'HRESCH', action: 'disclose', objected: true, expect: ['deny', 'national-opt-out'] },
  { title: 'auditors keep every event', type: 'AuditEvent', org: RES, roles: ['auditor'], purpose: 'HRESCH', action: 'disclose', objected: true, expect: ['permit', 'auditor'] },
];

describe('Consent engine: disclosures (exports) for secondary use and objections', () => {
  for (const c of CASES) {
    it(c.title, () => {
      const req: DecisionRequest = {
        actor: { clientId: 'client', organization: c.org, roles: c.roles ?? [] },
        purpose: c.purpose,
        action: c.action,
        data: c.type === 'Consent' ? { type: 'Consent', id: 'c1', security: [], named: [{ identifier: RES.identifier }] } : { type: 'AuditEvent', id: 'e1', security: [] },
        patients: [{ id: 'p1', custodians: [GP], consents: c.objected ? [named, optOut] : [named] }],
        now: NOW,
        defaultPolicy: 'deny',
      };
      const d = decide(req);
      assert.deepEqual([d.effect, d.reason], c.expect, d.detail);
    });
  }
});
