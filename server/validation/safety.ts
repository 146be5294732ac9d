import type { OperationOutcomeIssue } from 'fhir/r4';
import { NULL_MESSAGE } from './schema';

/**
 * What the JSON schema misses and the FHIR spec forbids, for the safety of everyone who renders
 * our data: active content in narrative (txt-1, http://hl7.org/fhir/R4/narrative.html#xhtml) and
 * HTML tags in ordinary strings. (`fhir_comments` and other unknown properties are the schema's.)
 */

/** Elements allowed in narrative: HTML 4.0 chapters 7-11 basic formatting, no forms, scripts, objects or frames. */
const ALLOWED_ELEMENTS = new Set([
  'a', 'abbr', 'acronym', 'address', 'b', 'bdo', 'big', 'blockquote', 'br', 'caption', 'center', 'cite', 'code', 'col', 'colgroup',
  'dd', 'del', 'dfn', 'div', 'dl', 'dt', 'em', 'font', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'i', 'img', 'ins', 'kbd', 'li',
  'map', 'area', 'ol', 'p', 'pre', 'q', 's', 'samp', 'small', 'span', 'strike', 'strong', 'sub', 'sup', 'table', 'tbody', 'td',
  'tfoot', 'th', 'thead', 'tr', 'tt', 'u', 'ul', 'var',
]);

/** Attributes allowed in narrative (HTML 4.0 presentation and table attributes; no event handlers). */
const ALLOWED_ATTRIBUTES = new Set([
  'title', 'style', 'class', 'id', 'lang', 'xml:lang', 'dir', 'accesskey', 'tabindex', 'rowspan', 'colspan', 'align', 'valign',
  'width', 'height', 'href', 'name', 'src', 'alt', 'border', 'cellpadding', 'cellspacing', 'summary', 'span', 'abbr', 'axis',
  'headers', 'scope', 'frame', 'rules', 'start', 'type', 'value', 'xmlns', 'cite', 'datetime', 'char', 'charoff', 'nowrap',
  'bgcolor', 'hspace', 'vspace', 'compact', 'shape', 'coords', 'clear', 'size', 'noshade', 'color', 'face', 'usemap', 'ismap',
  'longdesc', 'hreflang', 'rel', 'rev', 'charset', 'target',
]);

// No part of a tag may contain '<' (XML forbids it in names and attribute values), so a match
// attempt never runs past the next '<': matching stays linear on unclosed tags ("<a b<a b<a b…").
const TAG = /<\s*(\/?)\s*([A-Za-z][A-Za-z0-9:_-]*)((?:\s+[^\s=<>\/]+(?:\s*=\s*(?:"[^"<]*"|'[^'<]*'|[^\s<>]+))?)*)\s*(\/?)\s*>/g;
const ATTRIBUTE = /([^\s=<>\/]+)(?:\s*=\s*("[^"<]*"|'[^'<]*'|[^\s<>]+))?/g;

/** Narrative problems of one xhtml `div`. */
export function checkNarrative(div: string, expression: string): OperationOutcomeIssue[] {
  const issues: OperationOutcomeIssue[] = [];
  const fail = (message: string) => issues.push({ severity: 'error', code: 'invariant', diagnostics: `Narrative (txt-1): ${message}`, expression: [expression] });
  if (!/^\s*<div(\s[^>]*)?>/.test(div) || !/xmlns\s*=\s*["']http:\/\/www\.w3\.org\/1999\/xhtml["']/.test(div.slice(0, div.indexOf('>') + 1))) {
    fail('must be a <div> element in the XHTML namespace (xmlns="http://www.w3.org/1999/xhtml")');
  }
  if (/<!DOCTYPE|<!ENTITY|<\?/i.test(div)) fail('must not contain a DOCTYPE, entity declarations or processing instructions');
  if (/<!\[CDATA\[/i.test(div)) fail('must not contain CDATA sections');
  for (const m of div.matchAll(TAG)) {
    if (m[1] === '/') continue; // closing tags: the opening tag was judged already
    const name = m[2].toLowerCase();
    if (!ALLOWED_ELEMENTS.has(name)) {
      fail(`element <${name}> is not allowed`);
      continue;
    }
    for (const a of (m[3] ?? '').matchAll(ATTRIBUTE)) {
      const attr = a[1].toLowerCase();
      const value = (a[2] ?? '').replace(/^["']|["']$/g, '');
      if (attr.startsWith('xmlns')) continue;
      if (!ALLOWED_ATTRIBUTES.has(attr)) fail(`attribute ${attr} on <${name}> is not allowed`);
      else if ((attr === 'href' || attr === 'src' || attr === 'longdesc' || attr === 'cite') && /^\s*(javascript|vbscript|data\s*:\s*text\/html)/i.test(decodeEntities(value))) {
        fail(`attribute ${attr} on <${name}> uses an active-content URL`);
      } else if (attr === 'style' && /expression\s*\(|javascript:|url\s*\(\s*['"]?\s*javascript/i.test(value)) {
        fail(`style on <${name}> contains script`);
      }
    }
  }
  // A tag the pattern above could not read (e.g. "<script" split by odd spacing) is still refused.
  if (/<\s*(script|iframe|object|embed|applet|form|input|button|textarea|select|link|meta|base|style|frame|frameset|svg|math)\b/i.test(div)) {
    if (!issues.some((i) => /not allowed/.test(i.diagnostics ?? ''))) fail('contains active or form content');
  }
  return issues;
}

function decodeEntities(value: string): string {
  return value.replace(/&#x([0-9a-f]+);?/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16))).replace(/&#(\d+);?/g, (_m, d: string) => String.fromCharCode(Number(d))).replace(/\s+/g, '');
}

/**
 * Ordinary strings that carry markup which a careless renderer would execute
 * (the HL7 validator's "text that looks like embedded HTML tags").
 */
const ACTIVE_MARKUP = /<\s*\/?\s*(script|iframe|object|embed|applet|form|img|svg|style|link|meta|base|a|body|html|input|button|textarea|frame|frameset|math|video|audio|source)\b[^<>]*>|<[^<>]+\son[a-z]+\s*=|javascript\s*:/i;

/**
 * Characters no FHIR string may hold: controls below U+0020 other than tab, line feed and carriage
 * return (http://hl7.org/fhir/R4/datatypes.html#string; XML cannot carry them, PostgreSQL's text
 * refuses U+0000), and UTF-16 surrogates that do not form a pair (not Unicode characters).
 */
const FORBIDDEN_CHARACTER = /[\u0000-\u0008\u000B\u000C\u000E-\u001F]|[\uD800-\uDFFF]/u;

/** Walks a resource for unsafe strings and narrative; `type` prefixes the FHIRPath locations. */
export function checkSafety(type: string, resource: unknown): OperationOutcomeIssue[] {
  const issues: OperationOutcomeIssue[] = [];
  const fail = (code: OperationOutcomeIssue['code'], diagnostics: string, expression: string) => issues.push({ severity: 'error', code, diagnostics, expression: [expression] });
  const visit = (value: unknown, expression: string, key: string) => {
    if (typeof value === 'string') {
      const bad = FORBIDDEN_CHARACTER.exec(value);
      if (bad) {
        const point = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
        fail('invalid', `The string contains U+${point}, which FHIR strings may not contain (control characters other than tab, carriage return and line feed, or an unpaired surrogate)`, expression);
      }
      if (key === 'div') issues.push(...checkNarrative(value, expression));
      else if (key !== 'data' && ACTIVE_MARKUP.test(value)) {
        fail('invalid', 'The string value contains text that looks like embedded HTML tags, which are not allowed for security reasons', expression);
      }
      return;
    }
    if (value === null) {
      fail('structure', NULL_MESSAGE, expression);
      return;
    }
    if (Array.isArray(value)) {
      // http://hl7.org/fhir/R4/json.html: arrays, objects and strings are never empty.
      if (value.length === 0) fail('structure', 'Arrays must not be empty in FHIR JSON; omit the property', expression);
      value.forEach((v, i) => visit(v, `${expression}[${i}]`, key));
      return;
    }
    if (value && typeof value === 'object') {
      const node = value as Record<string, unknown>;
      if (Object.keys(node).length === 0) fail('structure', 'Objects must not be empty in FHIR JSON; omit the property', expression);
      for (const [k, v] of Object.entries(node)) {
        if (Array.isArray(v)) visitRepeating(node, k, v, `${expression}.${k}`);
        else visit(v, `${expression}.${k}`, k);
      }
    }
  };
  /**
   * A repeating element. The one place FHIR JSON has null: a repeating primitive `k` and its
   * extensions `_k` are two arrays of the same length, null filling the positions of one that
   * the other needs (http://hl7.org/fhir/R4/json.html#primitive). Whether `k` is a primitive at
   * all is the schema's to say (its items are null only there).
   */
  const visitRepeating = (node: Record<string, unknown>, k: string, list: unknown[], expression: string) => {
    const twinKey = k.startsWith('_') ? k.slice(1) : `_${k}`;
    const twin = node[twinKey];
    if (list.length === 0) fail('structure', 'Arrays must not be empty in FHIR JSON; omit the property', expression);
    if (k.startsWith('_') && Array.isArray(twin) && twin.length !== list.length) {
      fail('structure', `${k} must have one entry (or null) for each value of ${twinKey}: ${list.length} here, ${twin.length} there`, expression);
    }
    list.forEach((v, i) => {
      const at = `${expression}[${i}]`;
      if (v !== null) return visit(v, at, k);
      const partner = Array.isArray(twin) ? twin[i] : undefined;
      if (partner === undefined || partner === null) fail('structure', NULL_MESSAGE, at);
    });
  };
  visit(resource, type, '');
  return issues;
}
