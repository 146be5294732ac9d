import type { Consent, Patient } from 'fhir/r4';
import { definitions } from '../../resources';
import type { PatientRecord, PolicyData } from '../consent/policy';
import type { StoreReader } from '../store/read';

const WATCHED = ['Patient', 'Consent'] as const;
const MAX_CACHED = 50000;

/**
 * Patients and their Consents for the consent policy, cached per patient. Before serving a
 * request it asks the database for the newest Patient and Consent commit (one indexed round
 * trip, once per request) and drops every patient changed since: a Consent change is enforced
 * on the very next request, also when the change was made by another server process.
 */
export class PatientFactsCache implements PolicyData {
  private readonly cache = new Map<string, PatientRecord>();
  private watermark: number[] | undefined;
  /** The request (its AccessContext, see PolicyData) the last check was made for. */
  private checkedFor: WeakRef<object> | undefined;
  /** The check under way, and the one that starts when it ends. */
  private refreshing: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  /** Bumped whenever a change is seen: a load that raced with a change is used once, not cached. */
  private generation = 0;

  constructor(private readonly reader: StoreReader) {}

  async patients(ids: readonly string[], asker: object): Promise<ReadonlyMap<string, PatientRecord>> {
    if (this.checkedFor?.deref() !== asker) {
      await this.refresh();
      this.checkedFor = new WeakRef(asker);
    }
    const out = new Map<string, PatientRecord>();
    const missing: string[] = [];
    for (const id of ids) {
      const r = this.cache.get(id);
      if (r) out.set(id, r);
      else missing.push(id);
    }
    if (missing.length) for (const r of await this.load(missing)) out.set(r.id, r);
    return out;
  }

  /** Forgets everything (used when a change cannot be attributed to patients). */
  clear(): void {
    this.cache.clear();
  }

  /**
   * A check that starts after this call. Concurrent requests share checks, but a request never
   * relies on one that was already under way when it asked: that one may have read the
   * watermark before a Consent change this request must see. So at most one check runs and one
   * waits, and everyone who asked during a check shares the next.
   */
  private refresh(): Promise<void> {
    if (!this.refreshing) return (this.refreshing = this.startCheck());
    this.next ??= this.refreshing
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return (this.refreshing = this.startCheck());
      });
    return this.next;
  }

  private startCheck(): Promise<void> {
    const check: Promise<void> = this.check().finally(() => {
      if (this.refreshing === check) this.refreshing = undefined;
    });
    return check;
  }

  private async check(): Promise<void> {
    const latest = await this.reader.latestSeq(WATCHED);
    const before = this.watermark;
    this.watermark = latest;
    if (!before) return;
    if (latest.every((s, i) => s === before[i])) return;
    this.generation++;
    const since = Math.min(...before);
    const changes = await this.reader.changesSince(WATCHED, since, 1001);
    if (changes.length > 1000) {
      this.cache.clear();
      return;
    }
    for (const c of changes) {
      if (c.type === 'Patient') this.cache.delete(c.id);
      else if (c.content === null) this.cache.clear(); // a deleted Consent: its patient is no longer in the row
      else {
        // The patients it names now, and those the version it replaced named: a Consent moved to
        // another patient (a correction) no longer counts for the first one.
        for (const content of [c.content, c.previous]) {
          if (content) for (const id of definitions.Consent.patientIds(JSON.parse(content) as Consent)) this.cache.delete(id);
        }
      }
    }
  }

  private async load(ids: string[]): Promise<PatientRecord[]> {
    const generation = this.generation;
    const records = await loadRecords(this.reader, ids);
    // Cache only what no change overtook while it was being read.
    if (generation === this.generation) {
      if (this.cache.size + ids.length > MAX_CACHED) this.cache.clear();
      for (const r of records) this.cache.set(r.id, r);
    }
    return records;
  }
}

/**
 * Patients and their Consents as one write transaction sees them, uncached (over the committed
 * state, the export gate's view: see ExportGate). With `unsettled`,
 * the Consents the transaction wrote whose checks have not run yet (GatedTx.authorize judges
 * new content just before COMMIT) do not count: each is left out, and a Consent it replaced
 * counts as it was (`unsettled` maps such a Consent's id to that version, or to undefined when
 * the transaction created it). Without that, a Consent the client may not write, POSTed earlier
 * in a transaction Bundle, would decide its later entries' reads (a conditional match, the
 * version a PATCH tests) before its refusal rolled everything back, and their answers would tell
 * the client about a Patient it may not see.
 */
export class TransactionView implements PolicyData {
  constructor(
    private readonly reader: StoreReader,
    private readonly unsettled?: ReadonlyMap<string, Consent | undefined>,
  ) {}

  async patients(ids: readonly string[]): Promise<ReadonlyMap<string, PatientRecord>> {
    const records = await loadRecords(this.reader, [...ids]);
    const unsettled = this.unsettled;
    if (!unsettled?.size) return new Map(records.map((r) => [r.id, r]));
    return new Map(
      records.map((r) => {
        const consents = r.consents.filter((c) => c.id === undefined || !unsettled.has(c.id));
        for (const replaced of unsettled.values()) if (replaced && definitions.Consent.patientIds(replaced).includes(r.id)) consents.push(replaced);
        return [r.id, { ...r, consents }];
      }),
    );
  }
}

async function loadRecords(reader: StoreReader, ids: string[]): Promise<PatientRecord[]> {
  if (ids.length === 0) return [];
  const { patients, consents } = await reader.patientFacts(ids);
  const byPatient = new Map<string, Consent[]>();
  for (const v of consents) {
    for (const id of definitions.Consent.patientIds(v.resource!)) {
      const list = byPatient.get(id) ?? [];
      list.push(v.resource as Consent);
      byPatient.set(id, list);
    }
  }
  const found = new Map(patients.map((p) => [p.id, p]));
  return ids.map((id) => {
    const p = found.get(id);
    return { id, resource: p && !p.deleted ? (p.resource as Patient) : undefined, creatorOrg: p?.creatorOrg ?? null, consents: byPatient.get(id) ?? [] };
  });
}
