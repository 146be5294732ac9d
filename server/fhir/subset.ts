import fs from 'node:fs';
import path from 'node:path';
import type { Resource, StructureDefinition } from 'fhir/r4';
import { RESOURCE_TYPES, type ResourceType } from '../../resources';
import { FhirError } from '../errors';
import { profilesDir } from '../profiles-dir';

/**
 * `_summary` and `_elements` (http://hl7.org/fhir/R4/search.html#summary, #elements), driven by
 * the base StructureDefinitions' `isSummary` and `min`. A subsetted resource is tagged
 * SUBSETTED, as the spec requires, so nobody mistakes it for the whole record.
 */
export type SummaryMode = 'true' | 'text' | 'data' | 'count' | 'false';

export const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED', display: 'subsetted' } as const;

interface Shape {
  /**
   * Element paths (relative, `[x]` removed) marked isSummary, and mandatory top-level ones. Not
   * the ancestors of summary elements: every backbone's `modifierExtension` is isSummary, so
   * marking parents would keep every backbone.
   */
  readonly summary: ReadonlySet<string>;
  /** Top-level elements with min >= 1. */
  readonly mandatory: ReadonlySet<string>;
  /** Backbone element paths (have children in the definition). */
  readonly backbone: ReadonlySet<string>;
}

let shapes: Map<ResourceType, Shape> | undefined;

function shapeOf(type: ResourceType): Shape {
  if (!shapes) {
    shapes = new Map();
    for (const t of RESOURCE_TYPES) {
      const sd = JSON.parse(fs.readFileSync(path.join(profilesDir(), 'r4', `StructureDefinition-${t}.json`), 'utf8')) as StructureDefinition;
      const summary = new Set<string>();
      const mandatory = new Set<string>();
      const backbone = new Set<string>();
      for (const el of sd.snapshot?.element ?? []) {
        if (el.path === t) continue;
        const rel = el.path.slice(t.length + 1).replace(/\[x\]$/, '');
        const parts = rel.split('.');
        for (let i = 1; i < parts.length; i++) backbone.add(parts.slice(0, i).join('.'));
        // ElementDefinition.isSummary: a mandatory element at the root must be marked summary. R4's
        // AuditEvent.agent and .source (1..1) are not; kept anyway, the summary stays a valid resource.
        if (el.isSummary || (parts.length === 1 && (el.min ?? 0) > 0)) summary.add(rel);
        if (parts.length === 1 && (el.min ?? 0) > 0) mandatory.add(rel);
      }
      shapes.set(t, { summary, mandatory, backbone });
    }
  }
  return shapes.get(type)!;
}

function elementName(key: string, shape: Shape, prefix: string): string {
  // choice elements: deceasedBoolean -> deceased
  if (shape.summary.has(prefix + key) || shape.backbone.has(prefix + key) || shape.mandatory.has(key)) return key;
  const m = /^([a-z][A-Za-z]*?)[A-Z][A-Za-z]*$/.exec(key);
  return m && (shape.summary.has(prefix + m[1]) || shape.mandatory.has(m[1])) ? m[1] : key;
}

function tagged(resource: Resource): Resource {
  const tags = resource.meta?.tag ?? [];
  if (tags.some((t) => t.system === SUBSETTED.system && t.code === SUBSETTED.code)) return resource;
  return { ...resource, meta: { ...resource.meta, tag: [...tags, { ...SUBSETTED }] } };
}

/**
 * The summary elements of `node`: an element is kept only if it is itself marked isSummary (a
 * backbone element whose children are is not enough), and a backbone left with no summary
 * content is dropped, as FHIR JSON has no empty objects or arrays (ele-1).
 */
function keepSummary(node: Record<string, unknown>, shape: Shape, prefix: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'resourceType') {
      out[key] = value;
      continue;
    }
    const base = key.startsWith('_') ? key.slice(1) : key;
    const name = elementName(base, shape, prefix);
    const rel = prefix + name;
    if (!shape.summary.has(rel)) continue;
    if (shape.backbone.has(rel) && value && typeof value === 'object') {
      const kept = Array.isArray(value)
        ? value.map((v) => (v && typeof v === 'object' ? keepSummary(v as Record<string, unknown>, shape, rel + '.') : v)).filter((v) => !isEmptyObject(v))
        : keepSummary(value as Record<string, unknown>, shape, rel + '.');
      if (!isEmptyObject(kept) && !(Array.isArray(kept) && kept.length === 0)) out[key] = kept;
    } else {
      out[key] = value;
    }
  }
  return out;
}

function isEmptyObject(v: unknown): boolean {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0;
}

/** Applies a `_summary` mode to a resource (`count` is handled by search, `false` returns it whole). */
export function summarize(type: ResourceType, resource: Resource, mode: SummaryMode): Resource {
  if (mode === 'false' || mode === 'count') return resource;
  const shape = shapeOf(type);
  const src = resource as unknown as Record<string, unknown>;
  let out: Record<string, unknown>;
  if (mode === 'data') {
    out = { ...src };
    delete out.text;
  } else if (mode === 'text') {
    out = { resourceType: src.resourceType };
    for (const key of ['id', 'meta', 'text']) if (src[key] !== undefined) out[key] = src[key];
    for (const [key, value] of Object.entries(src)) if (shape.mandatory.has(elementName(key, shape, ''))) out[key] = value;
  } else {
    out = keepSummary(src, shape, '');
  }
  return tagged(out as unknown as Resource);
}

/** Keeps the listed top-level elements, plus id, meta and the mandatory ones. */
export function selectElements(type: ResourceType, resource: Resource, elements: readonly string[]): Resource {
  const shape = shapeOf(type);
  const wanted = new Set(elements.map((e) => e.trim()).filter(Boolean).map((e) => e.replace(/^[A-Z][A-Za-z]+\./, '')));
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(resource as unknown as Record<string, unknown>)) {
    const base = key.startsWith('_') ? key.slice(1) : key;
    const name = elementName(base, shape, '');
    if (key === 'resourceType' || key === 'id' || key === 'meta' || wanted.has(name) || wanted.has(base) || shape.mandatory.has(name)) out[key] = value;
  }
  return tagged(out as unknown as Resource);
}

/** What `_summary` / `_elements` ask for. */
export interface Subset {
  readonly summary?: SummaryMode;
  readonly elements?: readonly string[];
}

const SUMMARY_MODES: readonly string[] = ['true', 'text', 'data', 'count', 'false'];

/** `_summary` / `_elements` from query (or form) parameters, validated: a bad `_summary` is a 400. */
export function subsetOf(pairs: readonly (readonly [string, string])[]): Subset {
  let summary: SummaryMode | undefined;
  const elements: string[] = [];
  let sawElements = false;
  for (const [name, value] of pairs) {
    if (value === '') continue; // empty parameters are ignored (http://hl7.org/fhir/R4/search.html#errors)
    if (name === '_summary') {
      if (!SUMMARY_MODES.includes(value)) throw new FhirError('invalid-request', `_summary must be one of true, text, data, count, false`, { expression: ['_summary'] });
      summary = value as SummaryMode;
    } else if (name === '_elements') {
      sawElements = true;
      elements.push(...value.split(',').map((e) => e.trim()).filter(Boolean));
    }
  }
  return { ...(summary ? { summary } : {}), ...(sawElements ? { elements } : {}) };
}

/** Whether applySubset changes resources at all (`_summary=false` and an empty `_elements` do not). */
export function reshapes(subset: Subset): boolean {
  return (subset.summary !== undefined && subset.summary !== 'false') || (subset.elements?.length ?? 0) > 0;
}

/** A resource shaped by `_summary` (which wins) or `_elements`, tagged SUBSETTED when anything was left out. */
export function applySubset(type: ResourceType, resource: Resource, subset: Subset): Resource {
  // One test of whether anything is shaped (search pages send unshaped resources unparsed by it).
  if (!reshapes(subset)) return resource;
  if (subset.summary !== undefined && subset.summary !== 'false') return summarize(type, resource, subset.summary);
  return selectElements(type, resource, subset.elements!);
}
