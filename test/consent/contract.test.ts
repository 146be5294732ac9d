import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DENY_REASONS, PERMIT_REASONS, RULES } from '../../server/consent/decision';
import { sharedValidator } from '../../server/validation/validate';
import { repoJson } from '../support/fixtures';
import { assertValidFhir } from '../support/api';

describe('Consent policy: the documented contract', () => {
  const readme = fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Consent policy'), readme.indexOf('## Errors'));

  it('the README names every reason code a decision can carry (except the test-only open-access)', () => {
    for (const reason of [...PERMIT_REASONS, ...DENY_REASONS]) {
      if (reason === 'open-access' || reason === 'scope' || reason === 'insufficient-scope' || reason === 'outside-patient-compartment' || reason === 'granular-scope') continue;
      assert.ok(section.includes(`\`${reason}\``), `README Consent policy does not mention ${reason}`);
    }
  });

  it('every reason has its rule in words', () => {
    for (const reason of [...PERMIT_REASONS, ...DENY_REASONS]) assert.ok(RULES[reason]?.length > 20, reason);
  });

  it('the objection profiles\' examples are valid, and a wrongly shaped objection is refused', () => {
    const v = sharedValidator();
    for (const f of ['Consent-example-national-data-opt-out.json', 'Consent-example-type-1-objection.json']) {
      const example = repoJson<Record<string, unknown>>('profiles', 'examples', f);
      assertValidFhir(example, f);
      assert.deepEqual(v.report('Consent', example).profile, [], f);
      const permits = { ...example, provision: { type: 'permit' } };
      assert.ok(v.report('Consent', permits).profile.length > 0, `${f} with a permit provision`);
    }
  });

  it('the OperationDefinitions in resources/operations are valid FHIR', () => {
    for (const f of fs.readdirSync(path.resolve(__dirname, '..', '..', '..', 'resources', 'operations'))) {
      assertValidFhir(repoJson('resources', 'operations', f), f);
    }
  });
});
