import fs from 'node:fs';
import path from 'node:path';
import type { Consent, OperationOutcomeIssue, Resource, StructureDefinition } from 'fhir/r4';
import { objectionKind } from '../consent/opt-out';
import { definitions, RESOURCE_TYPES, type ResourceType } from '../../resources';
import { FhirError } from '../errors';
import { profilesDir } from '../profiles-dir';
import { checkSafety } from './safety';
import { schemaValidator } from './schema';
import { StructureChecker } from './structure';

/**
 * The outcome of validating one resource.
 * - `base`: problems with FHIR R4 itself (schema, base cardinality and invariants, narrative
 *   safety, ids): the request is malformed, 400.
 * - `profile`: the resource is valid FHIR but breaks a Custodian profile: 422.
 * - `warnings`: reported by $validate, never block a write.
 */
export interface ValidationReport {
  readonly base: OperationOutcomeIssue[];
  readonly profile: OperationOutcomeIssue[];
  readonly warnings: OperationOutcomeIssue[];
}

/**
 * Validates resources against the official R4 JSON schema, the base R4 StructureDefinitions
 * and Custodian's profiles in `profiles/`. Loaded once per process (a few seconds) and immutable.
 */
export class Validator {
  private readonly checkers = new Map<ResourceType, StructureChecker>();
  /** Further Custodian profiles (objections), checked when claimed or when their category says so. */
  private readonly extra = new Map<string, { type: string; checker: StructureChecker }>();
  readonly profiles: ReadonlyMap<string, StructureDefinition>;

  constructor() {
    const dir = profilesDir();
    const profiles = new Map<string, StructureDefinition>();
    for (const file of fs.readdirSync(dir).filter((f) => f.startsWith('StructureDefinition-') && f.endsWith('.json'))) {
      const sd = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as StructureDefinition;
      profiles.set(sd.url, sd);
    }
    this.profiles = profiles;
    for (const type of RESOURCE_TYPES) {
      const base = JSON.parse(fs.readFileSync(path.join(dir, 'r4', `StructureDefinition-${type}.json`), 'utf8')) as StructureDefinition;
      const own = profiles.get(definitions[type].profile);
      if (!own) throw new Error(`profile ${definitions[type].profile} for ${type} is missing from profiles/`);
      this.checkers.set(type, new StructureChecker(type, base, [own]));
    }
    const empty = { resourceType: 'StructureDefinition', snapshot: { element: [] } } as unknown as StructureDefinition;
    for (const sd of profiles.values()) {
      if (RESOURCE_TYPES.some((t) => definitions[t].profile === sd.url)) continue;
      this.extra.set(sd.url, { type: sd.type, checker: new StructureChecker(sd.type, empty, [sd]) });
    }
    // Compile the schema for our types now, not on the first write (it takes seconds).
    for (const type of RESOURCE_TYPES) schemaValidator().validate(type, { resourceType: type });
  }

  /** Every issue of `resource`, sorted into base problems, profile problems and warnings. */
  report(type: ResourceType, resource: unknown): ValidationReport {
    const report: ValidationReport = { base: [], profile: [], warnings: [] };
    if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
      report.base.push({ severity: 'error', code: 'structure', diagnostics: 'A resource must be a JSON object' });
      return report;
    }
    const declared = (resource as { resourceType?: unknown }).resourceType;
    if (declared !== type) {
      report.base.push({ severity: 'error', code: 'structure', diagnostics: `resourceType must be "${type}", found ${JSON.stringify(declared)}`, expression: [`${type}.resourceType`] });
      return report;
    }
    // The schema and the safety walk both refuse a stray null; say it once.
    const seen = new Set<string>();
    for (const issue of [...schemaValidator().validate(type, resource), ...checkSafety(type, resource)]) {
      const key = `${issue.expression?.[0]}|${issue.diagnostics}`;
      if (!seen.has(key)) report.base.push(issue);
      seen.add(key);
    }
    let structural: ReturnType<StructureChecker['check']>;
    try {
      const checks = [this.checkers.get(type)!, ...this.extraProfiles(type, resource as Resource).map((url) => this.extra.get(url)!.checker)];
      structural = checks.flatMap((c) => c.check(resource as Record<string, unknown>));
    } catch (err) {
      // Content the schema already refused may not have the shapes the invariants and profile
      // selection read; it is rejected either way. On content the schema accepted, it is a bug.
      if (report.base.length === 0) throw err;
      structural = [];
    }
    for (const issue of structural) {
      const { origin, ...plain } = issue;
      if (plain.severity !== 'error') report.warnings.push(plain);
      else if (origin === 'base') report.base.push(plain);
      else report.profile.push(plain);
    }
    return report;
  }

  /**
   * The further Custodian profiles a resource must meet: those it claims in meta.profile, and
   * for a Consent categorised as an objection, the objection's profile (the consent engine acts
   * on the category, so the shape must hold whether or not it is claimed).
   */
  private extraProfiles(type: ResourceType, resource: Resource): string[] {
    const urls = new Set<string>();
    for (const url of resource.meta?.profile ?? []) {
      if (typeof url !== 'string') continue; // a null gap beside _profile extensions
      const bare = url.split('|')[0];
      if (this.extra.get(bare)?.type === type) urls.add(bare);
    }
    if (type === 'Consent') {
      const kind = objectionKind(resource as Consent);
      if (kind) urls.add(`https://custodian.example.org/fhir/StructureDefinition/custodian-${kind === 'national-opt-out' ? 'national-data-opt-out' : 'type-1-objection'}`);
    }
    return [...urls];
  }

  /** Throws the 400 or 422 a write must answer with when `resource` is not acceptable. */
  assertValid(type: ResourceType, resource: unknown): void {
    const { base, profile } = this.report(type, resource);
    if (base.length) throw new FhirError('invalid-resource', `The ${type} is not valid FHIR R4`, { issues: base });
    if (profile.length) throw new FhirError('unprocessable', `The ${type} does not meet the Custodian profile`, { issues: profile });
  }
}

let shared: Validator | undefined;

/** The process-wide validator (schema and StructureDefinitions are immutable once loaded). */
export function sharedValidator(): Validator {
  return (shared ??= new Validator());
}
