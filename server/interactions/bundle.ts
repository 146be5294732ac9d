import { STATUS_CODES } from 'node:http';
import type { Binary, Bundle, BundleEntry, BundleEntryRequest, Resource } from 'fhir/r4';
import { isResourceType, type ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { FhirError, informational, outcomeOf } from '../errors';
import type { Gate, GatedReads, GatedTx } from '../gate/gate';
import type { StoredVersion } from '../store/records';
import { parseStrictJson } from '../validation/strict-json';
import { createResource } from './create';
import { conditionalDelete, deleteResource } from './delete';
import { conditionalFilter, newId, type InteractionEnv, type WriteResult } from './common';
import { patchResource } from './patch';
import { historyBundle, type BundleOptions } from './reads';
import { searchBundle, systemSearchBundle } from './search';
import { conditionalUpdate, updateResource } from './update';

/**
 * batch and transaction (http://hl7.org/fhir/R4/http.html#transaction).
 *
 * A transaction runs every entry in one database transaction, in the spec's order (DELETE,
 * POST, PUT/PATCH, GET), after assigning ids to its POSTs and rewriting `urn:uuid:` and
 * conditional references to them; the first failing entry rolls everything back and its
 * OperationOutcome is the answer. A batch runs each entry on its own and reports each result.
 */
export interface BundleRequestOptions extends BundleOptions {
  readonly maxEntries: number;
  readonly returnPreference: 'minimal' | 'representation' | 'OperationOutcome';
  /**
   * Turns an unexpected failure of one batch entry into that entry's error (logging it under the
   * request id); the other entries still run. Without it such a failure fails the whole batch.
   */
  readonly entryFailure?: (err: unknown, index: number) => FhirError;
  /**
   * Told, before any entry runs, what the Bundle's reading and searching entries ask, one line
   * each: GET and HEAD (`Bundle.entry[2]: GET Patient?identifier=…`), and the conditional writes,
   * which search before they write (`Bundle.entry[3]: PUT Patient?identifier=…`,
   * `Bundle.entry[4]: POST Patient (If-None-Exist: identifier=…)`), so the request's events
   * record what it looked for even when it matched nothing. Not called when there are none.
   */
  readonly asked?: (entries: readonly string[]) => void;
}

interface Entry {
  readonly index: number;
  readonly method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  readonly url: string;
  readonly type?: ResourceType;
  readonly id?: string;
  readonly versionId?: number;
  readonly query?: string;
  /** `_history` or `_search` after the type or id. */
  readonly tail?: '_history' | '_search';
  readonly fullUrl?: string;
  resource?: Resource;
  readonly request: BundleEntryRequest;
}

const ORDER: Record<Entry['method'], number> = { DELETE: 0, POST: 1, PUT: 2, PATCH: 2, GET: 3, HEAD: 3 };

export async function processBundle(gate: Gate, ctx: AccessContext, env: InteractionEnv, body: unknown, options: BundleRequestOptions): Promise<Bundle> {
  const bundle = asBundle(body);
  const raw = bundle.entry ?? [];
  if (raw.length > options.maxEntries) {
    throw new FhirError('payload-too-large', `The Bundle has ${raw.length} entries; this server accepts at most ${options.maxEntries}`);
  }
  assertUniqueFullUrls(raw);
  if (bundle.type === 'transaction') {
    const entries = raw.map((e, i) => parseEntry(e, i, options.baseUrl));
    tellAsked(entries, options);
    return transaction(gate, ctx, env, entries, options);
  }
  // In a batch a malformed entry fails alone.
  const entries = raw.map((e, i) => {
    try {
      return parseEntry(e, i, options.baseUrl);
    } catch (err) {
      if (err instanceof FhirError) return err;
      throw err;
    }
  });
  tellAsked(entries.filter((e): e is Entry => !(e instanceof FhirError)), options);
  return batch(gate, ctx, env, entries, options);
}

/** Tells `asked` what the entries that read or search ask (a transaction's GETs are noted inside its write transaction, so this comes first). */
function tellAsked(entries: readonly Entry[], options: BundleRequestOptions): void {
  const lines = entries.flatMap((e) => {
    const line = `Bundle.entry[${e.index}]: ${e.method} ${e.url}`;
    // Its If-None-Exist is what a POST searches, whatever its url holds (`Patient?` too).
    if (e.method === 'POST' && e.request.ifNoneExist !== undefined) return [`${line} (If-None-Exist: ${e.request.ifNoneExist})`];
    if (e.method === 'GET' || e.method === 'HEAD' || e.query !== undefined) return [line];
    return [];
  });
  if (lines.length && options.asked) options.asked(lines);
}

function asBundle(body: unknown): Bundle {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new FhirError('invalid-resource', 'The body must be a Bundle');
  const b = body as Bundle;
  if (b.resourceType !== 'Bundle') throw new FhirError('invalid-resource', `POST to the base URL takes a Bundle, not ${JSON.stringify(b.resourceType)}`, { expression: ['Bundle.resourceType'] });
  if (b.type !== 'batch' && b.type !== 'transaction') {
    throw new FhirError('invalid-request', `Bundle.type must be batch or transaction, not ${JSON.stringify(b.type)}`, { expression: ['Bundle.type'] });
  }
  if (b.entry !== undefined && !Array.isArray(b.entry)) throw new FhirError('invalid-resource', 'Bundle.entry must be an array', { expression: ['Bundle.entry'] });
  return b;
}

/**
 * bdl-7 (http://hl7.org/fhir/R4/bundle.html#invs): a fullUrl is unique within a Bundle unless the
 * entries hold different versions. Two entries claiming `urn:uuid:1` would make every reference
 * to it ambiguous (the last one silently won).
 */
function assertUniqueFullUrls(entries: readonly BundleEntry[]): void {
  const seen = new Map<string, number>();
  entries.forEach((e, i) => {
    if (!e || typeof e !== 'object' || typeof e.fullUrl !== 'string') return;
    const key = `${e.fullUrl}|${String((e.resource as Resource | undefined)?.meta?.versionId ?? '')}`;
    const first = seen.get(key);
    if (first !== undefined) {
      throw new FhirError('invalid-request', `Entries ${first} and ${i} have the same fullUrl ${e.fullUrl} (bdl-7: fullUrls are unique in a Bundle)`, { expression: [`Bundle.entry[${i}].fullUrl`] });
    }
    seen.set(key, i);
  });
}

function parseEntry(e: BundleEntry, index: number, baseUrl: string): Entry {
  const where = `Bundle.entry[${index}]`;
  const fail = (message: string, path = 'request') => new FhirError('invalid-request', `Entry ${index}: ${message}`, { expression: [`${where}.${path}`] });
  if (!e || typeof e !== 'object' || Array.isArray(e)) throw fail('is not an object', '');
  const request = e.request;
  if (!request || typeof request !== 'object' || Array.isArray(request)) throw fail('has no request');
  if (typeof request.method !== 'string') throw fail(`request.method must be a string: GET, HEAD, POST, PUT, PATCH or DELETE`, 'request.method');
  const method = request.method.toUpperCase() as Entry['method'];
  if (!(method in ORDER)) throw fail(`request.method ${JSON.stringify(request.method)} is not GET, HEAD, POST, PUT, PATCH or DELETE`, 'request.method');
  if (typeof request.url !== 'string' || !request.url) throw fail('has no request.url', 'request.url');
  checkRequestFields(request, fail);
  if (e.fullUrl !== undefined && (typeof e.fullUrl !== 'string' || !e.fullUrl)) throw fail('fullUrl must be a non-empty string', 'fullUrl');
  let url = request.url;
  if (url.startsWith(baseUrl + '/')) url = url.slice(baseUrl.length + 1);
  url = url.replace(/^\//, '');
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? undefined : url.slice(q + 1);
  const segments = path.split('/').filter(Boolean);
  const parsed: Partial<Entry> = {};
  if (segments.length === 0) {
    if (method !== 'GET' && method !== 'HEAD') throw fail(`${method} needs a resource type in request.url`, 'request.url');
  } else if (segments[0] === '_history' && segments.length === 1) {
    Object.assign(parsed, { tail: '_history' });
  } else {
    if (!isResourceType(segments[0])) throw new FhirError('unknown-type', `Entry ${index}: resource type '${segments[0]}' is not supported by this server`, { expression: [`${where}.request.url`] });
    Object.assign(parsed, { type: segments[0] });
    const [, second, third, fourth] = segments;
    if (second === '_search' || second === '_history') Object.assign(parsed, { tail: second });
    else if (second !== undefined) {
      if (!/^[A-Za-z0-9\-.]{1,64}$/.test(second)) throw fail(`'${second}' is not a valid id`, 'request.url');
      Object.assign(parsed, { id: second });
      if (third === '_history') {
        if (fourth === undefined) Object.assign(parsed, { tail: '_history' });
        else if (/^[1-9]\d{0,8}$/.test(fourth)) Object.assign(parsed, { versionId: Number(fourth) });
        else throw fail(`'${fourth}' is not a version id`, 'request.url');
      } else if (third !== undefined) throw fail(`request.url ${request.url} is not a supported interaction`, 'request.url');
    }
    if (segments.length > 4) throw fail(`request.url ${request.url} is not a supported interaction`, 'request.url');
  }
  return { index, method, url: request.url, query, fullUrl: e.fullUrl, resource: e.resource, request, ...parsed } as Entry;
}

/** FHIR instants (Bundle.entry.request.ifModifiedSince). */
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * The other request fields, checked before any entry runs (http://hl7.org/fhir/R4/bundle.html:
 * url, ifNoneMatch, ifMatch and ifNoneExist are strings, ifModifiedSince an instant), so a
 * malformed one is that entry's 400, never a crash of the whole Bundle.
 */
function checkRequestFields(request: BundleEntryRequest, fail: (message: string, path?: string) => FhirError): void {
  for (const field of ['url', 'ifNoneMatch', 'ifModifiedSince', 'ifMatch', 'ifNoneExist'] as const) {
    const value: unknown = request[field];
    if (value === undefined) continue;
    if (typeof value !== 'string' || !value) throw fail(`request.${field} must be a non-empty string`, `request.${field}`);
    if (CONTROL.test(value) || CONTROL.test(safeDecode(value))) throw fail(`request.${field} contains a control character`, `request.${field}`);
  }
  if (request.ifModifiedSince !== undefined && (!INSTANT.test(request.ifModifiedSince) || Number.isNaN(Date.parse(request.ifModifiedSince)))) {
    throw fail('request.ifModifiedSince must be an instant such as 2024-01-31T12:00:00Z', 'request.ifModifiedSince');
  }
  if (request.ifMatch !== undefined && !ETAG.test(request.ifMatch)) throw fail(`request.ifMatch must be a version ETag such as W/"3"`, 'request.ifMatch');
}

/** Control characters (U+0000 among them, which PostgreSQL's text cannot hold) have no place in a URL or header. */
const CONTROL = /[\u0000-\u001F\u007F]/;
const ETAG = /^\s*(?:W\/)?"?([1-9]\d{0,8})"?\s*$/;

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

function statusLine(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? ''}`.trim();
}

/** The response entry for a write, honouring Prefer: return=... */
function writeEntry(result: WriteResult, options: BundleRequestOptions): BundleEntry {
  const v = result.version;
  const entry: BundleEntry = { response: { status: statusLine(result.status) } };
  if (v) {
    entry.response!.etag = `W/"${v.versionId}"`;
    entry.response!.lastModified = new Date(v.lastUpdated).toISOString();
    if (result.status !== 204) {
      entry.response!.location = `${v.type}/${v.id}/_history/${v.versionId}`;
      entry.fullUrl = `${options.baseUrl}/${v.type}/${v.id}`;
    }
  }
  if (options.returnPreference === 'OperationOutcome' || (result.withheld && options.returnPreference !== 'minimal') || (result.status === 200 && !v)) entry.response!.outcome = informational(result.message);
  else if (options.returnPreference === 'representation' && v?.resource && result.status !== 204) entry.resource = v.resource;
  return entry;
}

function errorEntry(err: FhirError): BundleEntry {
  return { response: { status: statusLine(err.status), outcome: outcomeOf(err) } };
}

/** Re-raises an entry's failure with its position, keeping the catalogue code (and so the status). */
function atEntry(err: unknown, entry: Entry): never {
  if (!(err instanceof FhirError)) throw err;
  const prefix = `Entry ${entry.index} (${entry.method} ${entry.url})`;
  const issues = outcomeOf(err).issue.map((i) => ({
    ...i,
    diagnostics: `${prefix}: ${i.diagnostics ?? ''}`,
    expression: i.expression?.map((x) => (entry.type && x.startsWith(entry.type) ? `Bundle.entry[${entry.index}].resource${x.slice(entry.type.length)}` : x)),
  }));
  throw new FhirError(err.code, `${prefix}: ${err.message}`, { issues, headers: err.options.headers });
}

function binaryPatch(entry: Entry): unknown {
  const r = entry.resource as Binary | undefined;
  if (!r || r.resourceType !== 'Binary' || r.contentType !== 'application/json-patch+json' || !r.data) {
    throw new FhirError('invalid-request', 'A PATCH entry carries a Binary with contentType application/json-patch+json and the patch in data');
  }
  try {
    return parseStrictJson(Buffer.from(r.data, 'base64').toString('utf8'));
  } catch (err) {
    if (err instanceof FhirError && /more than once/.test(err.message)) throw err;
    throw new FhirError('invalid-json', 'The Binary patch data is not base64-encoded JSON');
  }
}

function ifMatchOf(entry: Entry): number | undefined {
  const value = entry.request.ifMatch;
  if (value === undefined) return undefined;
  const m = ETAG.exec(value);
  if (!m) throw new FhirError('invalid-request', `request.ifMatch must be a version ETag such as W/"3"`);
  return Number(m[1]);
}

async function runWrite(tx: GatedTx, env: InteractionEnv, entry: Entry, assignedId?: string): Promise<WriteResult> {
  const type = entry.type;
  if (!type) throw new FhirError('invalid-request', `${entry.method} needs a resource type in request.url`);
  switch (entry.method) {
    case 'POST':
      if (entry.id || entry.tail) throw new FhirError('invalid-request', `POST entries create: request.url must be just the type`);
      return createResource(tx, env, type, entry.resource, assignedId ? undefined : entry.request.ifNoneExist, assignedId);
    case 'PUT':
      if (entry.tail || entry.versionId) throw new FhirError('invalid-request', 'PUT entries take Type/id or Type?criteria');
      if (entry.id) return updateResource(tx, env, type, entry.id, entry.resource, ifMatchOf(entry));
      if (entry.query !== undefined) return conditionalUpdate(tx, env, type, entry.query, entry.resource, ifMatchOf(entry));
      throw new FhirError('invalid-request', 'PUT entries take Type/id or Type?criteria');
    case 'PATCH':
      if (!entry.id || entry.tail || entry.versionId) throw new FhirError('invalid-request', 'PATCH entries take Type/id');
      return patchResource(tx, env, type, entry.id, binaryPatch(entry), ifMatchOf(entry));
    case 'DELETE':
      if (entry.tail || entry.versionId) throw new FhirError('invalid-request', 'DELETE entries take Type/id or Type?criteria');
      if (entry.id) return deleteResource(tx, env, type, entry.id, ifMatchOf(entry));
      if (entry.query !== undefined) return conditionalDelete(tx, env, type, entry.query);
      throw new FhirError('invalid-request', 'DELETE entries take Type/id or Type?criteria');
    default:
      throw new Error('not a write');
  }
}

async function runRead(reads: Pick<GatedReads, 'read' | 'vread' | 'search' | 'count' | 'history' | 'historyCount' | 'feedCursor' | 'included' | 'revincluded'>, ctx: AccessContext, env: InteractionEnv, entry: Entry, options: BundleRequestOptions): Promise<BundleEntry> {
  const pairs = entry.query ? [...new URLSearchParams(entry.query).entries()] : [];
  const sub = { ...options, path: entry.url.split('?')[0].replace(/^\//, '') };
  let resource: Resource;
  let version: StoredVersion | undefined;
  if (entry.type === undefined && entry.tail !== '_history') {
    resource = await systemSearchBundle(reads, ctx, env, pairs, sub);
  } else if (entry.tail === '_history') {
    resource = await historyBundle(reads, ctx, env, { type: entry.type, id: entry.id }, pairs, sub);
  } else if (entry.id && entry.versionId) {
    version = await reads.vread(ctx, entry.type!, entry.id, entry.versionId);
    resource = version.resource!;
  } else if (entry.id) {
    version = await reads.read(ctx, entry.type!, entry.id);
    resource = version.resource!;
  } else {
    resource = await searchBundle(reads, ctx, env, entry.type!, pairs, sub);
  }
  if (version && notModified(entry.request, version)) {
    return { response: { status: statusLine(304), etag: `W/"${version.versionId}"` } };
  }
  const out: BundleEntry = { response: { status: statusLine(200) } };
  if (version) {
    out.fullUrl = `${options.baseUrl}/${version.type}/${version.id}`;
    out.response!.etag = `W/"${version.versionId}"`;
    out.response!.lastModified = new Date(version.lastUpdated).toISOString();
    resource = options.shape(version.type, resource);
  }
  if (entry.method === 'GET') out.resource = resource;
  return out;
}

/** The entry's conditional read (ifNoneMatch, else ifModifiedSince) finds the client's copy current, as for HTTP reads. */
function notModified(request: BundleEntryRequest, version: StoredVersion): boolean {
  if (request.ifNoneMatch !== undefined) {
    const tags = request.ifNoneMatch.split(',').map((t) => t.trim().replace(/^W\//, '').replace(/"/g, ''));
    return tags.includes('*') || tags.includes(String(version.versionId));
  }
  if (request.ifModifiedSince !== undefined) return Math.floor(version.lastUpdated / 1000) * 1000 <= Date.parse(request.ifModifiedSince);
  return false;
}

async function batch(gate: Gate, ctx: AccessContext, env: InteractionEnv, entries: (Entry | FhirError)[], options: BundleRequestOptions): Promise<Bundle> {
  const out: BundleEntry[] = [];
  for (const entry of entries) {
    if (entry instanceof FhirError) {
      out.push(errorEntry(entry));
      continue;
    }
    try {
      if (entry.method === 'GET' || entry.method === 'HEAD') out.push(await runRead(gate, ctx, env, entry, options));
      else out.push(writeEntry(await gate.transaction(ctx, (tx) => runWrite(tx, env, entry), { readsAuditIndex: readsAuditIndex([entry]) }), options));
    } catch (err) {
      if (err instanceof FhirError) out.push(errorEntry(err));
      else if (options.entryFailure) out.push(errorEntry(options.entryFailure(err, entry.index)));
      else throw err;
    }
  }
  return { resourceType: 'Bundle', type: 'batch-response', timestamp: new Date(env.now()).toISOString(), ...(out.length ? { entry: out } : {}) };
}

async function transaction(gate: Gate, ctx: AccessContext, env: InteractionEnv, entries: Entry[], options: BundleRequestOptions): Promise<Bundle> {
  // Two entries acting on one resource cannot be ordered meaningfully: the spec makes it an error.
  const seen = new Map<string, number>();
  for (const e of entries) {
    if (!e.type || !e.id || e.method === 'GET' || e.method === 'HEAD') continue;
    const key = `${e.type}/${e.id}`;
    if (seen.has(key)) {
      throw new FhirError('invalid-request', `Entries ${seen.get(key)} and ${e.index} both act on ${key}; a transaction may touch each resource once`, {
        expression: [`Bundle.entry[${e.index}].request.url`],
      });
    }
    seen.set(key, e.index);
  }
  return gate.transaction(ctx, async (tx) => {
    // 1. Ids for POSTs (or the existing match of an If-None-Exist), so references can be rewritten first.
    const mapping = new Map<string, string>();
    const assigned = new Map<number, { id: string; existing?: StoredVersion }>();
    for (const e of entries) {
      if (e.method !== 'POST' || !e.type) continue;
      try {
        let existing: StoredVersion | undefined;
        if (e.request.ifNoneExist) {
          await tx.lockKey(`create:${e.type}?${e.request.ifNoneExist}`);
          const matches = await tx.match(e.type, conditionalFilter(e.type, e.request.ifNoneExist, env), 'create');
          if (matches.length > 1) throw new FhirError('precondition-failed', `If-None-Exist matched more than one ${e.type}`);
          existing = matches[0];
        }
        const id = existing?.id ?? newId();
        assigned.set(e.index, { id, existing });
        if (e.fullUrl) mapping.set(e.fullUrl, `${e.type}/${id}`);
      } catch (err) {
        atEntry(err, e);
      }
    }
    for (const e of entries) {
      if (e.method === 'PUT' && e.type && e.id && e.fullUrl) mapping.set(e.fullUrl, `${e.type}/${e.id}`);
    }
    // 2. Rewrite references: urn:uuid / fullUrl → assigned ids; conditional references → their single match.
    for (const e of entries) {
      if (!e.resource || (e.method !== 'POST' && e.method !== 'PUT')) continue;
      try {
        e.resource = await rewriteReferences(e.resource, mapping, tx, env);
      } catch (err) {
        atEntry(err, e);
      }
    }
    // 3. Execute in the spec's order; answer in the request's order.
    const results = new Map<number, BundleEntry>();
    for (const e of [...entries].sort((a, b) => ORDER[a.method] - ORDER[b.method] || a.index - b.index)) {
      try {
        if (e.method === 'GET' || e.method === 'HEAD') {
          results.set(e.index, await runRead(tx.reads, ctx, env, e, options));
          continue;
        }
        const a = assigned.get(e.index);
        if (a?.existing) {
          results.set(e.index, writeEntry({ status: 200, version: a.existing, message: `${e.type}/${a.existing.id} already exists; nothing was created` }, options));
          continue;
        }
        results.set(e.index, writeEntry(await runWrite(tx, env, e, a?.id), options));
      } catch (err) {
        atEntry(err, e);
      }
    }
    return {
      resourceType: 'Bundle',
      type: 'transaction-response',
      timestamp: new Date(env.now()).toISOString(),
      ...(entries.length ? { entry: entries.map((e) => results.get(e.index)!) } : {}),
    } satisfies Bundle;
  }, { readsAuditIndex: readsAuditIndex(entries) });
}

/** Rewrites every `reference` in a resource (and `urn:uuid:` links in its narrative) per the mapping. */
async function rewriteReferences(resource: Resource, mapping: ReadonlyMap<string, string>, tx: GatedTx, env: InteractionEnv): Promise<Resource> {
  const conditional = new Map<string, string>();
  const collect = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(collect);
    else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === 'reference' && typeof v === 'string' && /^[A-Z][A-Za-z]+\?/.test(v)) conditional.set(v, '');
        else collect(v);
      }
    }
  };
  collect(resource);
  for (const ref of conditional.keys()) {
    const q = ref.indexOf('?');
    const type = ref.slice(0, q);
    if (!isResourceType(type)) throw new FhirError('invalid-request', `Conditional reference ${ref}: ${type} is not served here`);
    const matches = await tx.match(type, conditionalFilter(type, ref.slice(q + 1), env), 'create');
    if (matches.length !== 1) throw new FhirError('precondition-failed', `Conditional reference ${ref} matched ${matches.length === 0 ? 'nothing' : 'more than one resource'}`);
    conditional.set(ref, `${type}/${matches[0].id}`);
  }
  const rewrite = (node: unknown, key?: string): unknown => {
    if (Array.isArray(node)) return node.map((n) => rewrite(n, key));
    if (node && typeof node === 'object') {
      // fromEntries defines own properties: assigning a "__proto__" key would instead set the
      // copy's prototype, so the validator and the gate would judge content that is not stored.
      return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, rewrite(v, k)]));
    }
    if (typeof node === 'string') {
      if (key === 'reference') return mapping.get(node) ?? conditional.get(node) ?? node;
      if (key === 'div' && mapping.size) {
        return node.replace(/(href|src)="([^"]+)"/g, (m, attr: string, value: string) => (mapping.has(value) ? `${attr}="${mapping.get(value)}"` : m));
      }
    }
    return node;
  };
  return rewrite(resource) as Resource;
}

/**
 * Whether entries search AuditEvents (a GET or HEAD that may, an AuditEvent's If-None-Exist): the
 * audit trail's own events are indexed after they are committed, and a transaction cannot wait
 * for that once it holds the writer (Gate.transaction).
 */
function readsAuditIndex(entries: readonly Entry[]): boolean {
  return entries.some(
    (e) =>
      ((e.method === 'GET' || e.method === 'HEAD') && (!e.type || /AuditEvent/.test(e.url))) ||
      (e.type === 'AuditEvent' && e.request.ifNoneExist !== undefined) ||
      // A conditional reference to AuditEvents in a body (`"reference": "AuditEvent?…"`) searches them too.
      (e.resource !== undefined && JSON.stringify(e.resource).includes('"AuditEvent?')),
  );
}
