import { parentPort, workerData } from 'node:worker_threads';
import type { AuditEvent } from 'fhir/r4';
import { buildItems, type AuditItem } from '../audit/items';
import { AuditFramer } from './audit-frame';
import { AuditIndexer } from './audit-index';
import { AuditJournal } from './audit-journal';
import type { AuditWorkerSetup, FromAuditWorker, ToAuditWorker } from './audit-thread';
import { openSqliteWriter, sqliteQuiesce, type Driver } from './driver';
import { SpareCpu } from './spare-cpu';
import { chainLinks, readHead, type ChainTail } from './audit-chain';
import { AuditAppendScript, chainMoved, earlyRowsFor, literal, serializeAuditEvent, writeTransaction, type SerializedAuditEvent, type Writer } from './write';

/**
 * The audit worker's thread (started by AuditThread, which says why): builds the audit trail's
 * own events from the facts the main thread hands over, commits them on a SQLite connection of
 * its own, and builds their search index later.
 *
 * Appends come first. Those that arrive while a commit is under way are committed together in the
 * next one (one transaction, one fsync), without waiting for the main thread; each is answered
 * once its COMMIT is done. Indexing runs between commits, in short passes, when the machine has
 * CPU to spare (see AuditIndexer); searches ask it to catch up first.
 */

/** Events per commit at most; a larger backlog is committed in several. */
const MAX_GROUP_EVENTS = 5000;
/**
 * Shortest time between the starts of two commits, ms. A commit has a fixed cost besides its
 * events (every page it touches is written to the WAL whole, then synced; its statements are
 * compiled): measured with the script path, 570 µs of CPU for 1 event, ~900 µs for 8, 3.6 ms for
 * 50. A request that finds the last commit older than this is committed at once; under load what
 * arrives meanwhile joins the next commit. 0 and 4 ms measured the same as 2 in the bench; 8 ms
 * lowered the audited read's throughput by a quarter (each response waits longer).
 */
const COMMIT_SPACING_MS = 2;
/** Events waiting that are worth a commit at once, however recent the last one. */
const FULL_GROUP_EVENTS = 500;
/** Events per background indexing pass: an append that arrives during one waits for it. */
const INDEX_PASS_SIZE = 100;
/**
 * Idle CPU (in cores) the machine must have had since the indexer last looked for it to index in
 * the background: under load it waits (up to the indexer's lag bound), so requests and their
 * appends keep the CPU.
 */
const SPARE_CORES = 0.75;

/**
 * Events per part of a large group's script (see commitScript): the first part is built before
 * anything runs, each later one while SQLite runs the one before it.
 */
const SCRIPT_PART_EVENTS = 200;

/** An event built from an append (its id given), serialised only when its statements are built. */
interface BuiltEvent {
  readonly event: AuditEvent;
  /** Whether it gets early index rows (earlyRowsFor). */
  readonly early: boolean;
  /** The append's time: the event's meta.lastUpdated. */
  readonly now: number;
  /** Its request's framer, when that request touched many patients (store/audit-frame.ts). */
  readonly framer?: AuditFramer;
}

interface BuiltAppend {
  readonly call: number;
  readonly events: readonly BuiltEvent[];
}

/** The appends committed together: one writer's, in order. */
interface Group {
  readonly appends: BuiltAppend[];
  events: number;
  readonly writer: Writer;
}

/** A part of an append script could not be built: nothing of the script is stored, and the group is appended the ordinary way. */
class Unscriptable extends Error {
  constructor(cause: unknown) {
    super(`the audit append script could not be built: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}

/**
 * Bench-only floors (CUSTODIAN_BENCH_AUDIT_FLOOR, see Config.benchAuditFloor), each through the
 * same hand-over, group commit, script and fsync as the trail. `row`: each request's item is
 * committed as one 8-byte row of a table of its own, no AuditEvent built: what being durable
 * before the response costs by itself. `journal`: its BALP events are built, serialised and
 * hash-chained as the trail's are, then appended to one table of their own (one B-tree, no
 * history, queue, index or chain rows): what an audit that stores its events whole but defers
 * everything else would cost. It still works out each event's queue key (serializeAuditEvent),
 * which such a design could defer too, so it errs on the dear side.
 */
export type AuditFloor = 'row' | 'journal';
const FLOOR_EVENT: BuiltEvent = { event: { resourceType: 'AuditEvent' } as AuditEvent, early: false, now: 0 };
const FLOOR_TABLES: Record<AuditFloor, string> = {
  row: 'CREATE TABLE IF NOT EXISTS bench_audit_floor (n INTEGER PRIMARY KEY, call INTEGER NOT NULL)',
  journal: 'CREATE TABLE IF NOT EXISTS bench_audit_journal (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, content TEXT NOT NULL, hash TEXT NOT NULL)',
};

interface Append {
  readonly call: number;
  readonly items: readonly AuditItem[];
  readonly writer: Writer;
  readonly now: number;
}

function post(message: FromAuditWorker): void {
  parentPort!.postMessage(message);
}

function failure(err: unknown): { error: string; code?: string } {
  const code = (err as { code?: unknown }).code;
  return { error: err instanceof Error ? err.message : String(err), ...(typeof code === 'string' ? { code } : {}) };
}

function sameWriter(a: Writer, b: Writer): boolean {
  return a.clientId === b.clientId && a.organization === b.organization;
}

/** The appends handed over, built, grouped and committed in order. */
class AppendLoop {
  private readonly queue: Append[] = [];
  private running: Promise<void> | undefined;
  private lastCommit = 0;
  private wake: (() => void) | undefined;
  /** Commits made so far. */
  private commits = 0;
  /** The chain's last link as this loop's last script commit left it; undefined when not known. */
  private tail: ChainTail | undefined;

  constructor(
    private readonly driver: Driver,
    private readonly localBase: string | undefined,
    private readonly committed: (events: number) => void,
    /** Where the script path commits the events (it counts them there by patient). */
    private readonly journal: AuditJournal,
    /** A bench-only floor (AuditFloor): no AuditEvent is written to the trail. */
    private readonly floor?: AuditFloor,
  ) {}

  add(append: Append): void {
    this.queue.push(append);
    if (this.queue.length >= FULL_GROUP_EVENTS) this.wake?.();
    this.running ??= this.run().finally(() => {
      this.running = undefined;
    });
  }

  /** Whether appends are waiting or being committed (the indexer waits for them). */
  get active(): boolean {
    return this.running !== undefined;
  }

  /** Resolves when everything handed in so far is committed or failed. */
  async drained(): Promise<void> {
    this.wake?.();
    while (this.running) await this.running;
  }

  private async run(): Promise<void> {
    while (this.queue.length) {
      // Commits are spaced: under load, what arrives meanwhile joins the next one.
      const wait = this.lastCommit + COMMIT_SPACING_MS - performance.now();
      if (wait > 0 && this.queue.length < FULL_GROUP_EVENTS) await this.pause(wait);
      this.lastCommit = performance.now();
      await this.commit(this.take());
    }
  }

  /** The next group: appends of one writer, in order, up to MAX_GROUP_EVENTS events, built. */
  private take(): Group {
    const writer = this.queue[0].writer;
    const group: Group = { appends: [], events: 0, writer };
    while (this.queue.length && sameWriter(this.queue[0].writer, writer) && (group.events === 0 || group.events < MAX_GROUP_EVENTS)) {
      const append = this.queue.shift()!;
      let events: BuiltEvent[];
      try {
        // Item by item: a request's events get early index rows if it touched few patients.
        events = this.floor === 'row' ? append.items.map(() => FLOOR_EVENT) : append.items.flatMap((item) => {
          const built = buildItems([item]);
          const early = earlyRowsFor(built.length);
          // The many events of a request about many patients share most of their JSON: journaled as frames and bodies.
          const framer = early ? undefined : new AuditFramer(built);
          return built.map((event) => ({ event, early, now: append.now, framer }));
        });
      } catch (err) {
        post({ kind: 'failed', calls: [append.call], ...failure(err) });
        continue;
      }
      group.appends.push({ call: append.call, events });
      group.events += events.length;
    }
    return group;
  }

  private async commit(group: Group): Promise<void> {
    if (group.appends.length === 0) return;
    if (this.floor) return this.commitFloor(group);
    let fallback = false;
    let committed = group.appends;
    try {
      if (!(await this.commitScript(group))) {
        fallback = this.driver.script !== undefined;
        const serialized = this.serializeEach(group.appends);
        committed = serialized;
        const events = serialized.flatMap((a) => a.serialized);
        if (events.length) await writeTransaction(this.driver, Date.now, this.localBase, (tx) => tx.appendSerialized(events, group.writer));
      }
    } catch (err) {
      post({ kind: 'failed', calls: committed.map((a) => a.call), ...failure(err) });
      return;
    }
    if (committed.length === 0) return;
    const total = committed.reduce((n, a) => n + a.events.length, 0);
    post({ kind: 'done', calls: committed.map((a) => a.call), events: committed.map((a) => a.events.length), commit: total, commitNo: ++this.commits, ...(fallback ? { fallback } : {}) });
    this.committed(total);
  }

  /** A bench-only floor (AuditFloor): one script, one fsync. */
  private async commitFloor(group: Group): Promise<void> {
    const calls = group.appends.map((a) => a.call);
    try {
      if (this.floor === 'row') await this.driver.script!(`INSERT INTO bench_audit_floor (call) VALUES ${group.appends.flatMap((a) => a.events.map(() => `(${a.call})`)).join(',')}`);
      else {
        const serialized = group.appends.flatMap((a) => a.events.map((e) => this.serialize({ ...e, early: false, framer: undefined })));
        // The journal's own chain (in floor mode the trail's tail is never used), from its last row.
        this.tail ??= (await this.driver.get<ChainTail>('SELECT seq, hash FROM bench_audit_journal ORDER BY seq DESC LIMIT 1')) ?? { seq: 0, hash: '' };
        const chained = chainLinks(this.tail, serialized);
        const rows = chained.links.map((l, i) => `(${l.seq}, ${literal(l.id)}, ${literal(serialized[i].content)}, ${literal(l.hash)})`);
        await this.driver.script!(`INSERT INTO bench_audit_journal (seq, id, content, hash) VALUES ${rows.join(',\n')}`);
        this.tail = chained.tail;
      }
    } catch (err) {
      post({ kind: 'failed', calls, ...failure(err) });
      return;
    }
    post({ kind: 'done', calls, events: group.appends.map((a) => a.events.length), commit: group.events, commitNo: ++this.commits });
  }

  /** The appends' events serialised, append by append: one that cannot be is failed alone. */
  private serializeEach(appends: readonly BuiltAppend[]): (BuiltAppend & { serialized: SerializedAuditEvent[] })[] {
    const out: (BuiltAppend & { serialized: SerializedAuditEvent[] })[] = [];
    for (const a of appends) {
      try {
        out.push({ ...a, serialized: a.events.map((e) => this.serialize(e)) });
      } catch (err) {
        post({ kind: 'failed', calls: [a.call], ...failure(err) });
      }
    }
    return out;
  }

  private serialize(e: BuiltEvent): SerializedAuditEvent {
    return serializeAuditEvent(e.event, e.now, this.localBase, e.early, e.framer);
  }

  /**
   * The group as one script transaction (auditAppendScript), attached to the chain's tail as
   * this loop left it. A large group goes in parts of SCRIPT_PART_EVENTS (AuditAppendScript):
   * its events are serialised and their statements built while SQLite runs the part before.
   * False when there is no script path (PostgreSQL), no head to attach to, an event that cannot
   * be serialised or a value the script cannot hold as a literal, or the chain moved past the
   * tail (chainMoved): then nothing of it was stored, and the group is appended the ordinary
   * way, which reads the tail inside its transaction. Any other failure is the store's: it fails
   * the group (503), without a second attempt that would wait out the same busy database or
   * full disk again.
   */
  private async commitScript(group: Group): Promise<boolean> {
    if (!this.driver.script) return false;
    const tail = this.tail ?? (await readHead(this.driver));
    this.tail = undefined;
    if (!tail) return false;
    const script = new AuditAppendScript(group.writer, tail);
    const events = group.appends.flatMap((a) => a.events);
    const keys: (string | null)[] = [];
    let at = 0;
    const next = () => {
      const chunk = events.slice(at, at + SCRIPT_PART_EVENTS);
      at += chunk.length;
      const last = at >= events.length;
      try {
        const serialized = chunk.map((e) => this.serialize(e));
        for (const e of serialized) keys.push(e.patient);
        return { sql: script.part(serialized, last), last };
      } catch (err) {
        throw new Unscriptable(err);
      }
    };
    let first: { sql: string; last: boolean } | undefined;
    try {
      // Built before the script is queued, so a group of one part holds the writer only to run.
      first = next();
    } catch {
      return false;
    }
    const parts = {
      next: () => {
        const part = first ?? next();
        first = undefined;
        return part;
      },
    };
    try {
      await this.driver.script(first.last ? first.sql : parts);
    } catch (err) {
      if (err instanceof Unscriptable || chainMoved(err)) return false;
      throw err;
    }
    // The script's events are the links after the tail it was built on, in order.
    this.journal.journaled(keys, tail.seq + 1);
    this.tail = script.tail;
    return true;
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}

/**
 * The worker's end when something fails that it cannot recover from (an error no caller caught,
 * a connection it cannot open, or a fault test's `crash`): it says why on stderr, takes no more
 * work, and exits once no SQLite operation is under way (sqliteQuiesce says why it must wait).
 * The main thread then fails the calls it had handed over and starts another worker.
 */
let failing = false;
/** The worker's connections, once open: closed by `leave` (see Driver.abandon). */
let openDriver: Driver | undefined;
function fail(err: unknown): void {
  if (failing) return;
  process.stderr.write(`custodian audit worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  leave(1, new Error('the audit worker has failed'));
}

/**
 * Exits with `code` once no SQLite operation is under way (sqliteQuiesce, which refuses new ones
 * with `refusal`), its connections abandoned: on a failure (`fail`), and when the main thread
 * halts the worker because the process is about to exit (AuditThread.halt).
 */
function leave(code: number, refusal: Error): void {
  if (failing) return;
  failing = true;
  const within = (ms: number, work: Promise<unknown>) => Promise.race([work.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, ms))]);
  void (async () => {
    // Past the deadlines it exits anyway: a failed worker that never exits would hang every
    // request handed to it, where one that exits is replaced.
    if ((await sqliteQuiesce(refusal, 5000)) && openDriver?.abandon) await within(5000, openDriver.abandon());
    process.exit(code);
  })();
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

async function main(): Promise<void> {
  const setup = workerData as AuditWorkerSetup;
  const driver = await openSqliteWriter(setup.settings, 'worker');
  openDriver = driver;
  if (setup.floor) await driver.run(FLOOR_TABLES[setup.floor]);
  // Declared before the indexer that asks about it.
  let appends: AppendLoop | undefined;
  // Requests come first: the indexer waits while the machine has no CPU to spare, and never
  // starts a pass while appends wait (a pass holds the writer); its passes are short.
  const spare = new SpareCpu();
  const journal = new AuditJournal(driver, (delta, reset) => post({ kind: 'journal', delta, reset }));
  await journal.load();
  const indexer = new AuditIndexer(driver, setup.localBase, { busy: () => appends?.active === true || spare.sample() < SPARE_CORES, passSize: INDEX_PASS_SIZE, journal, holdJournal: setup.holdJournal === true });
  appends = new AppendLoop(driver, setup.localBase, (n) => indexer.nudge(n), journal, setup.floor);
  const loop = appends;
  let reported = 0;
  const report = () => {
    const error = indexer.lastError === undefined ? undefined : failure(indexer.lastError).error;
    if (indexer.indexed !== reported || error) {
      reported = indexer.indexed;
      post({ kind: 'indexed', total: indexer.indexed, ...(error ? { error } : {}) });
    }
  };
  const reporter = setInterval(report, 500);
  reporter.unref();
  // Leftovers from before a restart, and events other processes queued.
  indexer.nudge();

  parentPort!.on('message', (m: ToAuditWorker) => {
    if (failing) return;
    switch (m.kind) {
      case 'append':
        loop.add(m);
        return;
      case 'nudge':
        indexer.nudge();
        return;
      case 'catch-up':
        indexer.catchUp(m.patients, m.params).then(
          () => {
            report();
            post({ kind: 'done', calls: [m.call] });
          },
          (err: unknown) => post({ kind: 'failed', calls: [m.call], ...failure(err) }),
        );
        return;
      case 'materialize':
        indexer.materialized().then(
          () => post({ kind: 'done', calls: [m.call] }),
          (err: unknown) => post({ kind: 'failed', calls: [m.call], ...failure(err) }),
        );
        return;
      case 'crash':
        // Thrown where nothing catches it, as a bug would be.
        setImmediate(() => {
          const err = new Error('crashed on request (a fault test)');
          err.stack = err.message;
          throw err;
        });
        return;
      case 'halt':
        leave(0, new Error('the audit worker is halting: the process is exiting'));
        return;
      case 'stop':
        void (async () => {
          await loop.drained();
          await indexer.settled();
          clearInterval(reporter);
          report();
          await driver.close();
          post({ kind: 'done', calls: [m.call] });
          parentPort!.close();
        })();
        return;
    }
  });
}

// Without its connection the worker is of no use.
void main().catch(fail);
