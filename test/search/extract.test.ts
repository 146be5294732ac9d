import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Resource } from 'fhir/r4';
import { extractIndexRows, extractWithFhirpathOnly } from '../../server/search/extract';
import { examples, SHARED } from '../support/fixtures';

/** The direct JSON walks used for speed index exactly what fhirpath.js does with the official expressions. */
describe('Search indexing: fast paths agree with fhirpath.js', () => {
  const ours = (r: Resource) => ['Patient', 'Consent', 'AuditEvent'].includes(r.resourceType);
  const synthea = fs
    .readFileSync(path.join(SHARED, 'synthea', 'sample-bulk-fhir-datasets-10-patients', 'Patient.000.ndjson'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => ['synthea', JSON.parse(l)] as [string, Resource]);
  const all = [
    ...examples('r4/examples/Patient'),
    ...examples('r4/examples/Consent'),
    ...examples('r4/examples/AuditEvent'),
    ...examples('ihe/balp/json/instances', ours),
    ...examples('ukcore/json/examples', ours),
    ...synthea,
  ];
  it(`gives the same index rows for all ${all.length} example resources`, () => {
    assert.ok(all.length > 100);
    for (const [name, r] of all) {
      assert.deepEqual(extractIndexRows(r.resourceType as 'Patient', r), extractWithFhirpathOnly(r.resourceType as 'Patient', r), name);
    }
  });
});
