import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, BundleEntry } from 'fhir/r4';
import type { JWK } from 'jose';
import type { Client } from 'fhir-kit-client' with { 'resolution-mode': 'import' };
import { fetchToken } from './token';

import { clientKey, parseArgs } from './cli';
/**
 * `npm run pull-consents -- --base URL --client ID [--key FILE] [--out FILE] [--state FILE]
 *   [--count N] [--scope S] [--purpose CODE] [--from CURSOR]`
 *
 * A national service's consent puller, built on fhir-kit-client. It walks Custodian's Consent
 * feed (`Consent/_history?_sort=_lastUpdated`, commit order) from a saved cursor, appends every
 * version (one history Bundle entry per line: fullUrl, request, response with the version's
 * ETag, and the resource unless it is a deletion) to an NDJSON file, and saves the cursor after
 * each page. Interrupted (even killed), it resumes where the last saved page ended: the file is
 * cut back to the length the state file records, so no version is written twice. At the end it
 * asks the server how many versions the same window holds (`_summary=count` between the first and
 * the last cursor) and exits 1 if that differs from the lines the file holds, or if any version
 * appears twice; 0 when everything reconciles; 2 on any other failure.
 */
export interface PullOptions {
  readonly base: string;
  readonly clientId: string;
  readonly privateJwk: JWK;
  readonly out: string;
  readonly state: string;
  readonly count: number;
  readonly scope: string;
  readonly purpose?: string;
  /** Where a new file's window starts (a cursor; 0 = the beginning of the feed). */
  readonly from?: string;
  /** Stop after this many pages (tests interrupting a walk); the state stays resumable. */
  readonly maxPages?: number;
  readonly log?: (line: string) => void;
}

/** What the state file holds: the window walked so far and how much of the file belongs to it. */
export interface PullState {
  readonly base: string;
  /** The cursor the file's window starts after. */
  readonly startCursor: string;
  /** The cursor the next page starts after. */
  readonly cursor: string;
  /** Versions (lines) and bytes of the file that are complete. */
  readonly lines: number;
  readonly bytes: number;
}

export interface PullResult {
  readonly state: PullState;
  readonly pages: number;
  readonly pulled: number;
  /** Undefined when the walk was stopped early (maxPages). */
  readonly reconciled?: { serverCount: number; duplicates: number; ok: boolean };
}

function readState(file: string): PullState | undefined {
  if (!fs.existsSync(file)) return undefined;
  return JSON.parse(fs.readFileSync(file, 'utf8')) as PullState;
}

/** Replaces the state file atomically (write, fsync, rename). */
function writeState(file: string, state: PullState): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  fs.writeSync(fd, JSON.stringify(state, null, 2) + '\n');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

function cursorOf(bundle: Bundle): string {
  const next = bundle.link?.find((l) => l.relation === 'next')?.url;
  const cursor = next ? new URL(next).searchParams.get('_cursor') : null;
  if (!cursor) throw new Error('the server sent a feed page without a next link carrying a _cursor');
  return cursor;
}

export async function pullConsents(o: PullOptions): Promise<PullResult> {
  const log = o.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const { Client } = await import('fhir-kit-client');
  let token = await fetchToken({ base: o.base, clientId: o.clientId, privateJwk: o.privateJwk, scope: o.scope, purpose: o.purpose });
  let renewAt = Date.now() + (token.expires_in - 30) * 1000;
  const client: Client = new Client({ baseUrl: o.base, bearerToken: token.access_token });
  const get = async (url: string): Promise<Bundle> => {
    if (Date.now() > renewAt) {
      token = await fetchToken({ base: o.base, clientId: o.clientId, privateJwk: o.privateJwk, scope: o.scope, purpose: o.purpose });
      renewAt = Date.now() + (token.expires_in - 30) * 1000;
      client.bearerToken = token.access_token;
    }
    return (await client.request(url)) as unknown as Bundle;
  };

  let state = readState(o.state);
  if (state) {
    const size = fs.existsSync(o.out) ? fs.statSync(o.out).size : 0;
    if (size < state.bytes) throw new Error(`${o.out} holds ${size} bytes but ${o.state} says ${state.bytes} were written: the file was changed; start a new one`);
    if (size > state.bytes) {
      // The last page was being written when the puller stopped: it will be fetched again.
      fs.truncateSync(o.out, state.bytes);
      log(`resuming: cut ${o.out} back to the ${state.lines} versions of the last saved page`);
    }
    if (state.base !== o.base) log(`note: ${o.state} was written against ${state.base}; continuing against ${o.base}`);
  } else {
    if (fs.existsSync(o.out) && fs.statSync(o.out).size > 0) throw new Error(`${o.out} exists but ${o.state} does not: refusing to append to a file whose window is unknown`);
    state = { base: o.base, startCursor: o.from ?? '0', cursor: o.from ?? '0', lines: 0, bytes: 0 };
    fs.writeFileSync(o.out, '');
    writeState(o.state, state);
  }

  let pages = 0;
  let pulled = 0;
  const fd = fs.openSync(o.out, 'a');
  try {
    for (;;) {
      if (o.maxPages !== undefined && pages >= o.maxPages) return { state, pages, pulled };
      const page = await get(`Consent/_history?_sort=_lastUpdated&_count=${o.count}&_cursor=${state.cursor}`);
      pages++;
      const entries = (page.entry ?? []).filter((e: BundleEntry) => e.resource?.resourceType !== 'OperationOutcome');
      const next = cursorOf(page);
      if (entries.length === 0) {
        if (next !== state.cursor) {
          // An empty page still moves the cursor on, to the commit head (past versions hidden from
          // this client and those of other types); cursors are sealed afresh each time, so the
          // text always differs. Save it: it is where the next poll resumes.
          state = { ...state, cursor: next };
          writeState(o.state, state);
        }
        break;
      }
      const text = entries.map((e) => JSON.stringify(e) + '\n').join('');
      fs.writeSync(fd, text);
      fs.fsyncSync(fd);
      state = { ...state, cursor: next, lines: state.lines + entries.length, bytes: state.bytes + Buffer.byteLength(text) };
      writeState(o.state, state);
      pulled += entries.length;
    }
  } finally {
    fs.closeSync(fd);
  }

  const counted = await get(`Consent/_history?_sort=_lastUpdated&_cursor=${state.startCursor}&_cursor-end=${state.cursor}&_summary=count`);
  const serverCount = counted.total ?? -1;
  const seen = new Set<string>();
  let duplicates = 0;
  for (const line of fs.readFileSync(o.out, 'utf8').split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as BundleEntry;
    const key = `${e.fullUrl}|${e.response?.etag}`;
    if (seen.has(key)) duplicates++;
    seen.add(key);
  }
  const ok = serverCount === state.lines && duplicates === 0;
  log(
    `pulled ${pulled} versions in ${pages} pages; ${o.out} holds ${state.lines} versions after cursor ${state.startCursor} up to ${state.cursor}; ` +
      `the server counts ${serverCount} for that window${duplicates ? `; ${duplicates} versions appear twice` : ''}: ${ok ? 'reconciled' : 'MISMATCH'}`,
  );
  return { state, pages, pulled, reconciled: { serverCount, duplicates, ok } };
}


async function main(): Promise<number> {
  const a = parseArgs(process.argv.slice(2));
  if (!a.client) {
    throw new Error(
      'usage: npm run pull-consents -- --client <id> [--base http://127.0.0.1:8080] [--key file] [--out consents.ndjson] [--state file] [--count 1000] [--scope system/Consent.rs] [--purpose CODE] [--from cursor]',
    );
  }
  const { privateJwk } = clientKey(a, a.client);
  const out = path.resolve(a.out ?? 'consents.ndjson');
  const count = Number(a.count ?? 1000);
  if (!Number.isInteger(count) || count < 1) throw new Error('--count must be a whole number of at least 1');
  const result = await pullConsents({
    base: (a.base ?? process.env.CUSTODIAN_BASE_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`).replace(/\/+$/, ''),
    clientId: a.client,
    privateJwk,
    out,
    state: path.resolve(a.state ?? `${out}.state.json`),
    count,
    scope: a.scope ?? 'system/Consent.rs',
    purpose: a.purpose,
    from: a.from,
    maxPages: a['max-pages'] ? Number(a['max-pages']) : undefined,
  });
  return result.reconciled === undefined ? 0 : result.reconciled.ok ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      const e = err as { message?: string; response?: { status?: number; data?: unknown } };
      process.stderr.write(`pull-consents: ${e.response ? `HTTP ${e.response.status}: ${JSON.stringify(e.response.data)}` : e.message}\n`);
      process.exit(2);
    },
  );
}
