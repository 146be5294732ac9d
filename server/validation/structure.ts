import fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';
import type { ElementDefinition, OperationOutcomeIssue, StructureDefinition } from 'fhir/r4';

/**
 * Checks a resource against StructureDefinitions: element cardinalities and FHIRPath
 * constraints (invariants). It reads the base R4 definitions' snapshots and Custodian's
 * profiles' differentials the same way, so a profile in `profiles/` is data, not code.
 *
 * What it checks: `min`/`max` of every element of the resource and its backbone elements
 * (nested `Consent.provision`s included, through `contentReference`), every constraint with its
 * severity, and the target types of Reference elements (`targetProfile`) for literal references
 * that name a type. What it leaves to the JSON schema: datatypes, primitive formats, codes of
 * required bindings, unknown properties.
 */
export interface StructureIssue extends OperationOutcomeIssue {
  /** 'base' for the FHIR R4 definition, 'profile' for a Custodian profile (decides 400 vs 422). */
  readonly origin: 'base' | 'profile';
}

interface Rule {
  readonly min: number;
  readonly max: number; // Infinity for '*'
  readonly origin: 'base' | 'profile';
  readonly profile: string;
  /** A fixed[x] primitive value the element must have, when the definition sets one. */
  readonly fixed?: unknown;
}

interface Constraint {
  readonly key: string;
  readonly severity: 'error' | 'warning';
  readonly human: string;
  readonly expression: string;
  readonly origin: 'base' | 'profile';
}

type Compiled = (node: unknown, env?: Record<string, unknown>) => unknown[];

/** Constraints of the base definitions that are not evaluated here, and why (none may be dropped silently). */
export const DELEGATED_CONSTRAINTS: Readonly<Record<string, string>> = {
  'ele-1': 'every element has a value or children: enforced by the JSON schema (empty objects and strings are rejected)',
};

export class StructureChecker {
  private readonly rules = new Map<string, Rule[]>();
  private readonly constraints = new Map<string, Constraint[]>();
  private readonly children = new Map<string, string[]>();
  private readonly backbone = new Set<string>();
  private readonly aliases = new Map<string, string>();
  private readonly choices = new Map<string, string>(); // 'Patient.deceased' -> 'Patient.deceased[x]'
  private readonly compiled = new Map<string, Compiled>();
  /** Reference elements → the resource types they may point at (absent: any resource). */
  private readonly targets = new Map<string, { types: ReadonlySet<string>; origin: 'base' | 'profile' }>();

  constructor(
    readonly type: string,
    base: StructureDefinition,
    profiles: readonly StructureDefinition[],
  ) {
    this.load(base.snapshot?.element ?? [], 'base', base.url);
    for (const p of profiles) this.load(p.differential?.element ?? [], 'profile', p.url);
    for (const path of [...this.rules.keys(), ...this.constraints.keys()]) {
      const parent = path.slice(0, path.lastIndexOf('.'));
      if (parent) this.backbone.add(parent);
    }
    // Compile everything now: a constraint that cannot compile must fail start-up, not pass at run time.
    for (const [path, list] of this.constraints) for (const c of list) this.compile(path, c.expression);
  }

  private load(elements: readonly ElementDefinition[], origin: 'base' | 'profile', url: string): void {
    for (const el of elements) {
      const path = el.path;
      if (el.contentReference) this.aliases.set(path, el.contentReference.replace(/^#/, ''));
      if (path.endsWith('[x]')) this.choices.set(path.slice(0, -3), path);
      const reference = el.type?.find((t) => t.code === 'Reference');
      if (reference?.targetProfile?.length) {
        const types = reference.targetProfile.map((url) => url.slice(url.lastIndexOf('/') + 1));
        if (types.includes('Resource')) this.targets.delete(path);
        else this.targets.set(path, { types: new Set(types), origin });
      }
      const fixedKey = Object.keys(el).find((k) => k.startsWith('fixed'));
      if (path !== this.type && (el.min !== undefined || el.max !== undefined || fixedKey)) {
        const parent = path.slice(0, path.lastIndexOf('.'));
        const list = this.children.get(parent) ?? [];
        if (!list.includes(path)) list.push(path);
        this.children.set(parent, list);
        const rule: Rule = {
          min: el.min ?? 0,
          max: el.max === undefined || el.max === '*' ? Infinity : Number(el.max),
          origin,
          profile: url,
          ...(fixedKey ? { fixed: (el as unknown as Record<string, unknown>)[fixedKey] } : {}),
        };
        this.rules.set(path, [...(this.rules.get(path) ?? []), rule]);
      }
      for (const c of el.constraint ?? []) {
        if (!c.expression || c.key in DELEGATED_CONSTRAINTS) continue;
        const list = this.constraints.get(path) ?? [];
        if (list.some((x) => x.key === c.key)) continue; // snapshots repeat inherited constraints
        list.push({ key: c.key, severity: c.severity === 'warning' ? 'warning' : 'error', human: c.human, expression: c.expression, origin });
        this.constraints.set(path, list);
      }
    }
  }

  private compile(base: string, expression: string): Compiled {
    const key = `${base}\u0000${expression}`;
    let fn = this.compiled.get(key);
    if (!fn) {
      const text = portable(expression);
      const target = base === this.type ? text : { base, expression: text };
      fn = fhirpath.compile(target, r4model, { traceFn: () => undefined }) as unknown as Compiled;
      this.compiled.set(key, fn);
    }
    return fn;
  }

  /** All cardinality and constraint issues of `resource`. */
  check(resource: Record<string, unknown>): StructureIssue[] {
    const issues: StructureIssue[] = [];
    this.walk(resource, resource, this.type, this.type, this.type, issues);
    return issues;
  }

  private canonical(path: string): string {
    let p = path;
    for (let i = 0; i < 16; i++) {
      let changed = false;
      for (const [alias, target] of this.aliases) {
        if (p === alias || p.startsWith(alias + '.')) {
          p = target + p.slice(alias.length);
          changed = true;
        }
      }
      if (!changed) break;
    }
    return p;
  }

  private walk(
    root: Record<string, unknown>,
    node: Record<string, unknown>,
    canonical: string,
    modelPath: string,
    expression: string,
    issues: StructureIssue[],
  ): void {
    this.evaluate(root, node, canonical, modelPath, expression, issues);
    for (const childPath of this.children.get(canonical) ?? []) {
      const name = childPath.slice(canonical.length + 1);
      const count = name.endsWith('[x]') ? countChoice(node, name.slice(0, -3)) : countOf(node[name]);
      for (const rule of this.rules.get(childPath) ?? []) {
        if (count < rule.min) {
          issues.push({
            severity: 'error',
            code: 'required',
            origin: rule.origin,
            diagnostics: `${childPath} is required: minimum cardinality ${rule.min}, found ${count}${rule.origin === 'profile' ? ` (profile ${rule.profile})` : ''}`,
            expression: [`${expression}.${name.replace('[x]', '')}`],
          });
        } else if (rule.fixed !== undefined && count > 0 && !name.endsWith('[x]') && [node[name]].flat().some((v) => JSON.stringify(v) !== JSON.stringify(rule.fixed))) {
          issues.push({
            severity: 'error',
            code: 'value',
            origin: rule.origin,
            diagnostics: `${childPath} must be ${JSON.stringify(rule.fixed)}${rule.origin === 'profile' ? ` (profile ${rule.profile})` : ''}`,
            expression: [`${expression}.${name}`],
          });
        } else if (count > rule.max) {
          issues.push({
            severity: 'error',
            code: 'structure',
            origin: rule.origin,
            diagnostics: `${childPath}: maximum cardinality ${rule.max}, found ${count}${rule.origin === 'profile' ? ` (profile ${rule.profile})` : ''}`,
            expression: [`${expression}.${name.replace('[x]', '')}`],
          });
        }
      }
    }
    for (const [key, value] of Object.entries(node)) {
      if (key === 'resourceType' || key.startsWith('_')) continue;
      const childModel = `${modelPath}.${key}`;
      let childCanonical = this.canonical(`${canonical}.${key}`);
      const choice = this.choiceOf(canonical, key);
      if (choice) childCanonical = choice;
      const target = this.targets.get(childCanonical);
      if (target && (!choice || key.endsWith('Reference'))) {
        (Array.isArray(value) ? value : [value]).forEach((item, i) => {
          checkTarget(item, target.types, target.origin, childCanonical, Array.isArray(value) ? `${expression}.${key}[${i}]` : `${expression}.${key}`, issues);
        });
      }
      const descend = this.backbone.has(childCanonical);
      const constrained = this.constraints.has(childCanonical);
      if (!descend && !constrained) continue;
      const items = Array.isArray(value) ? value : [value];
      items.forEach((item, i) => {
        const childExpr = Array.isArray(value) ? `${expression}.${key}[${i}]` : `${expression}.${key}`;
        if (item && typeof item === 'object' && descend) {
          this.walk(root, item as Record<string, unknown>, childCanonical, childModel, childExpr, issues);
        } else if (constrained) {
          this.evaluate(root, item, childCanonical, choice ? modelPath + '.' + key : childModel, childExpr, issues);
        }
      });
    }
  }

  private choiceOf(parent: string, key: string): string | undefined {
    for (const [prefix, path] of this.choices) {
      if (!prefix.startsWith(parent + '.')) continue;
      const name = prefix.slice(parent.length + 1);
      if (key.length > name.length && key.startsWith(name) && /[A-Z]/.test(key[name.length])) return path;
    }
    return undefined;
  }

  private evaluate(root: Record<string, unknown>, node: unknown, canonical: string, modelPath: string, expression: string, issues: StructureIssue[]): void {
    for (const c of this.constraints.get(canonical) ?? []) {
      let ok: boolean;
      try {
        const result = this.compile(canonical === this.type ? this.type : modelPath, c.expression)(node, { resource: root, rootResource: root });
        ok = result.length === 1 && result[0] === true;
      } catch (err) {
        issues.push({
          severity: 'error',
          code: 'exception',
          origin: c.origin,
          diagnostics: `Constraint ${c.key} could not be evaluated (${(err as Error).message}); the resource is rejected rather than accepted unchecked`,
          expression: [expression],
        });
        continue;
      }
      if (!ok) {
        issues.push({ severity: c.severity, code: 'invariant', origin: c.origin, diagnostics: `Constraint failed: ${c.key}: ${c.human}`, expression: [expression] });
      }
    }
  }
}

/**
 * A literal reference names its target's type (`Patient/1`, `http://server/fhir/Patient/1`,
 * `…/_history/2`): the pattern of http://hl7.org/fhir/R4/references.html#literal. Contained
 * (`#…`), `urn:uuid:`/`urn:oid:` and other URLs name no type and are not judged here.
 */
const LITERAL_REFERENCE = /^(?:https?:\/\/(?:[A-Za-z0-9\-\\.:%$]*\/)+)?([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/**
 * A Reference element may only point at the types its definition lists (`targetProfile`), and its
 * `type`, when given, must agree with the type its literal reference names
 * (http://hl7.org/fhir/R4/references.html#Reference).
 */
function checkTarget(item: unknown, allowed: ReadonlySet<string>, origin: 'base' | 'profile', path: string, expression: string, issues: StructureIssue[]): void {
  if (!item || typeof item !== 'object') return; // the schema reports a wrong shape
  const ref = item as { reference?: unknown; type?: unknown };
  const list = allowed.size === 1 ? `a ${[...allowed][0]}` : `one of ${[...allowed].join(', ')}`;
  const fail = (diagnostics: string, where: string) => issues.push({ severity: 'error', code: 'value', origin, diagnostics, expression: [where] });
  const named = typeof ref.reference === 'string' ? LITERAL_REFERENCE.exec(ref.reference)?.[1] : undefined;
  const declared = typeof ref.type === 'string' ? ref.type.replace(/^http:\/\/hl7\.org\/fhir\/StructureDefinition\//, '') : undefined;
  if (named && !allowed.has(named)) fail(`${path} must refer to ${list}; '${ref.reference as string}' is of type ${named}`, `${expression}.reference`);
  if (declared !== undefined && !allowed.has(declared)) fail(`${path} must refer to ${list}; its type is '${ref.type as string}'`, `${expression}.type`);
  else if (declared !== undefined && named && declared !== named) fail(`Reference.type '${ref.type as string}' does not match the reference '${ref.reference as string}'`, `${expression}.type`);
}

/**
 * The published R4 expressions assume a lenient `as()` on collections (dom-3 calls
 * `descendants().as(canonical)`); fhirpath.js follows the FHIRPath spec and raises an error on
 * more than one item. `ofType()` is the collection form with the same meaning.
 */
function portable(expression: string): string {
  return expression.replace(/descendants\(\)\.as\(/g, 'descendants().ofType(');
}

function countOf(value: unknown): number {
  if (value === undefined || value === null) return 0;
  return Array.isArray(value) ? value.length : 1;
}

function countChoice(node: Record<string, unknown>, name: string): number {
  return Object.keys(node).filter((k) => k.length > name.length && k.startsWith(name) && /[A-Z]/.test(k[name.length])).length;
}
