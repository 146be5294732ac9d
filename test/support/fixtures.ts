import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { AuditEvent, Resource } from 'fhir/r4';
import type { Api } from './api';

/**
 * The shared FHIR material: CUSTODIAN_SHARED_FHIR, or the first `shared/fhir` found beside the
 * repository or above it (the checkout lives next to `shared/`), or the workplace's
 * /work/shared/fhir for a clone made elsewhere.
 */
export const SHARED = findShared();

function findShared(): string {
  if (process.env.CUSTODIAN_SHARED_FHIR) return process.env.CUSTODIAN_SHARED_FHIR;
  let dir = path.resolve(__dirname, '..', '..', '..');
  for (;;) {
    const candidate = path.join(dir, 'shared', 'fhir');
    if (fs.existsSync(path.join(candidate, 'schema'))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) {
      if (fs.existsSync('/work/shared/fhir/schema')) return '/work/shared/fhir';
      throw new Error('shared/fhir not found; set CUSTODIAN_SHARED_FHIR');
    }
    dir = parent;
  }
}

export function loadJson<T = Resource>(...parts: string[]): T {
  return JSON.parse(fs.readFileSync(path.join(SHARED, ...parts), 'utf8')) as T;
}

/** Every JSON example in a shared folder, as [file name, resource]. */
export function examples(folder: string, filter: (r: Resource) => boolean = () => true): [string, Resource][] {
  const dir = path.join(SHARED, folder);
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => [f, JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Resource] as [string, Resource])
    .filter(([, r]) => filter(r));
}

/** Stores every R4 spec example of the three types through `api`, each a 201 (AuditEvents by POST: the server names them). */
export async function storeSpecExamples(api: Api): Promise<void> {
  for (const folder of ['Patient', 'Consent', 'AuditEvent']) {
    for (const [file, r] of examples(`r4/examples/${folder}`)) {
      const res = folder === 'AuditEvent' ? await api.post('/AuditEvent', r) : await api.put(`/${folder}/${r.id}`, r);
      assert.equal(res.status, 201, `${file}: ${JSON.stringify(res.body).slice(0, 300)}`);
    }
  }
}

/** A minimal valid Patient. */
export function patient(extra: Record<string, unknown> = {}): Resource {
  return { resourceType: 'Patient', name: [{ family: 'Smith', given: ['Jo'] }], ...extra } as Resource;
}

/** A minimal valid Consent for a patient. */
export function consent(patientId: string, extra: Record<string, unknown> = {}): Resource {
  return {
    resourceType: 'Consent',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patientId}` },
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    ...extra,
  } as Resource;
}

/** A minimal AuditEvent about Patient/p-(i mod `patients`), recorded `i` seconds into 2026: for filling a trail in bulk (Store.appendAudit). */
export function bulkAuditEvent(i: number, patients: number): AuditEvent {
  return {
    resourceType: 'AuditEvent',
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' },
    action: 'R',
    recorded: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
    outcome: '0',
    agent: [{ who: { display: 'bulk' }, requestor: true }],
    source: { observer: { display: 'Custodian' } },
    entity: [{ what: { reference: `Patient/p-${i % patients}` } }],
  };
}

export const ODS = 'https://fhir.nhs.uk/Id/ods-organization-code';
export const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
/** An organisation by ODS code, as a Reference. */
export const org = (code: string) => ({ identifier: { system: ODS, value: code } });

/** A Patient with an NHS number whose custodian is the practice GP1 (`extra` may say otherwise). */
export function managedPatient(family: string, nhs: string, extra: Record<string, unknown> = {}): Resource {
  return { resourceType: 'Patient', identifier: [{ system: NHS, value: nhs }], name: [{ family }], managingOrganization: org('GP1'), ...extra } as Resource;
}

/** A valid active privacy Consent of a patient with this provision. */
export function consentFor(patientId: string, provision: Record<string, unknown>, extra: Record<string, unknown> = {}): Resource {
  return consent(patientId, { provision, ...extra });
}

/** A valid NHS number (Modulus 11). */
export const NHS_VALID = '9000000009';
export const NHS_INVALID = '9000000008';

/** A JSON file of this repository (profiles, resources), from the compiled test's location. */
export function repoJson<T = Resource>(...parts: string[]): T {
  return JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', '..', ...parts), 'utf8')) as T;
}
