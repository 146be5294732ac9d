import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Resource } from 'fhir/r4';
import { isRealDate } from '../../server/validation/schema-adjustments';
import { schemaValidator } from '../../server/validation/schema';
import { checkSafety } from '../../server/validation/safety';
import { firstDuplicateKey } from '../../server/validation/strict-json';
import { sharedValidator } from '../../server/validation/validate';
import { assertValidFhir } from '../support/api';
import { SHARED } from '../support/fixtures';

/** Every FHIR resource (any type) in the shared folder, as [file, resource]; ndjson files line by line. */
function everyResource(folder: string): [string, Resource][] {
  const out: [string, Resource][] = [];
  const walk = (dir: string) => {
    for (const f of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else if (f.endsWith('.json')) {
        const r = JSON.parse(fs.readFileSync(p, 'utf8')) as Resource;
        if (r && typeof r.resourceType === 'string') out.push([path.relative(SHARED, p), r]);
      } else if (f.endsWith('.ndjson')) {
        fs.readFileSync(p, 'utf8').split('\n').filter((l) => l.trim()).forEach((l, i) => out.push([`${path.relative(SHARED, p)}:${i + 1}`, JSON.parse(l) as Resource]));
      }
    }
  };
  walk(path.join(SHARED, folder));
  return out.filter(([, r]) => r.resourceType);
}

describe('Foundation: the R4 JSON schema, as Custodian adjusts it (profiles/README.md)', () => {
  describe('keeps accepting the real world', () => {
    // The BALP ImplementationGuide uses R5 parameter codes; the published schema refuses it too.
    const known = new Set(['ihe/balp/json/conformance/ImplementationGuide-ihe.iti.balp.json']);
    const sets: [string, string, number][] = [
      ['R4 examples (Patient, Consent, AuditEvent, Bundles, OperationOutcome, CapabilityStatement)', 'r4/examples', 50],
      ['R4 StructureDefinitions', 'r4/structuredefinitions', 5],
      ['R4 SearchParameters', 'r4/searchparameters', 65],
      ['R4 code systems and value sets', 'r4/terminology', 5],
      ['UK Core examples and profiles', 'ukcore/json', 10],
      ['IHE BALP examples and conformance resources', 'ihe/balp/json', 46],
      ['Synthea bulk export (every resource type in it)', 'synthea', 7000],
    ];
    for (const [title, folder, atLeast] of sets) {
      it(title, function () {
        this.timeout(60000);
        const list = everyResource(folder).filter(([f]) => !known.has(f));
        assert.ok(list.length >= atLeast, `${folder}: ${list.length} resources`);
        const failures = list.map(([f, r]) => [f, schemaValidator().validate(r.resourceType, r)] as const).filter(([, issues]) => issues.length);
        assert.deepEqual(failures.slice(0, 5), []);
      });
    }
  });

  it('Synthea\'s Patients pass the whole validator too (schema, base definitions, Custodian profile)', () => {
    const patients = everyResource('synthea').filter(([, r]) => r.resourceType === 'Patient');
    assert.ok(patients.length >= 10);
    for (const [file, r] of patients) {
      const { base, profile } = sharedValidator().report('Patient', r);
      assert.deepEqual([...base, ...profile], [], file);
    }
  });

  it('refuses, through the test helper that checks every response too, what the published schema let through', () => {
    const bad: Record<string, unknown>[] = [
      { resourceType: 'Patient', managingOrganization: 5 },
      { resourceType: 'Patient', name: ['x'] },
      { resourceType: 'Patient', identifier: [null] },
      { resourceType: 'Consent', status: 'active', scope: { text: 's' }, category: [{ text: 'c' }], provision: { period: 'x' } },
      { resourceType: 'Bundle', type: 'searchset', entry: [{ resource: { resourceType: 'Patient', text: 'x' } }] },
      { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', expression: [5] }] },
    ];
    for (const body of bad) assert.throws(() => assertValidFhir(body, 'test'), JSON.stringify(body));
    assertValidFhir({ resourceType: 'Patient', name: [{ given: [null, 'Jo'], _given: [{ id: 'a' }, null] }] }, 'aligned null');
  });

  it('picks a contained resource by its resourceType and reports only its own problems', () => {
    const issues = schemaValidator().validate('Patient', { resourceType: 'Patient', contained: [{ resourceType: 'Organization', name: 5 }, { resourceType: 'Nope' }] });
    assert.deepEqual(
      issues.map((i) => i.expression![0]),
      ['Patient.contained[0].name', 'Patient.contained[1].resourceType'],
    );
  });

  describe('runs in linear time on hostile input (each of these took minutes or hours before)', () => {
    const timed = (f: () => unknown) => {
      const started = Date.now();
      f();
      return Date.now() - started;
    };
    it('base64Binary: whitespace between groups no longer backtracks exponentially', () => {
      const value = 'AAAA  '.repeat(40) + '!';
      const ms = timed(() => assert.equal(schemaValidator().validate('Patient', { resourceType: 'Patient', extension: [{ url: 'http://x', valueBase64Binary: value }] }).length, 1));
      assert.ok(ms < 500, `${ms} ms`);
      assert.deepEqual(schemaValidator().validate('Patient', { resourceType: 'Patient', extension: [{ url: 'http://x', valueBase64Binary: 'AAAA BBBB\nCC==' }] }), []);
    });
    it('markup and narrative checks: a megabyte of unclosed tags', () => {
      for (const s of ['<'.repeat(1e6), '<x on'.repeat(2e5), '<a b'.repeat(2.5e5), '<script'.repeat(1.4e5), '<a b="'.repeat(1.6e5)]) {
        const ms = timed(() => {
          checkSafety('Patient', { resourceType: 'Patient', name: [{ family: s }] });
          checkSafety('Patient', { resourceType: 'Patient', text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${s}</div>` } });
        });
        assert.ok(ms < 1000, `${s.slice(0, 8)}…: ${ms} ms`);
      }
    });
  });

  it('knows the calendar', () => {
    const cases: [string, boolean][] = [
      ['2020-02-29', true], ['2019-02-29', false], ['2000-02-29', true], ['1900-02-29', false], ['2020-02-30', false],
      ['2020-04-31', false], ['2020-12-31', true], ['2020-02', true], ['2020', true], ['2020-02-30T10:00:00Z', false], ['2021-06-30T23:59:60Z', true],
    ];
    for (const [value, real] of cases) assert.equal(isRealDate(value), real, value);
  });

  it('finds repeated properties wherever they are, and only within one object', () => {
    const cases: [string, string | undefined][] = [
      ['{"a":1,"a":2}', 'a'],
      ['{"a":1,"b":{"a":2}}', undefined],
      ['[{"a":1},{"a":2}]', undefined],
      ['{"x":[{}, "y", {"k":"}{\\"","k":1}]}', 'x[2].k'],
      ['{"n":{"a\\u0062":1,"ab":2}}', 'n.ab'],
      ['{"s":"{\\"a\\":1,\\"a\\":2}"}', undefined],
    ];
    for (const [text, expected] of cases) assert.equal(firstDuplicateKey(text)?.path, expected, text);
  });
});
