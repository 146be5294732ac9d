import type { Hash } from 'node:crypto';
import type { AuditEvent } from 'fhir/r4';

/**
 * Audit frames: how the journal keeps the events of a request about many patients.
 *
 * A page of a Consent walk writes one BALP event per patient, a thousand a page, and they are
 * the same ~3 KB of JSON but for ~100 bytes: the patient, the data seen, the Consents that
 * decided. Stored whole, the journal wrote 3 MB a page before the response could leave (measured
 * on this machine: 29 ms a page for 1,000 rows of 3 KB against 3 ms for 1,000 of 200 bytes).
 * So such an event is committed as its frame and its body:
 *
 *   stored JSON = '{"resourceType":"AuditEvent","id":"' id '",' frame.head body frame.tail
 *
 * where the head is everything from `meta` to the start of the `entity` array, the tail the
 * entities the request's events all end with (its query and request id) and the array's end,
 * and the body the entities in between. A frame is stored once (`audit_journal_frame`), its
 * events' journal rows name it and hold only their bodies. Nothing is lost or approximated:
 * the stored JSON is byte for byte what JSON.stringify gives for the event (test/audit/frame.test.ts
 * checks it), the chain hashes that whole text as it hashes every event, and the move out of the
 * journal writes that whole text into `resources` (JOURNAL_CONTENT).
 *
 * Which parts are shared is found by identity: the events of one request share the objects of
 * their request-level parts (audit/balp.ts builds them once), and the serialiser here turns each
 * such object into JSON once. An event that is not shaped as expected is simply not framed.
 */
export interface AuditFrame {
  /** `"meta":{…},…,"entity":[` */
  readonly head: string;
  /** The shared last entities and `]}`. */
  readonly tail: string;
}

/** A framed event: its frame, and its body (the JSON between the frame's head and tail). */
export interface Framed {
  readonly frame: AuditFrame;
  readonly body: string;
}

/** An event's stored JSON, framed. */
export interface FramedJson extends Framed {
  readonly content: string;
}

const PREFIX = '{"resourceType":"AuditEvent","id":"';
/** Ids written into the JSON as they are (JSON.stringify would not escape anything in them). */
const PLAIN_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** The stored JSON of an event from its id, frame and body. */
export function framedContent(id: string, frame: AuditFrame, body: string): string {
  return `${PREFIX}${id}",${frame.head}${body}${frame.tail}`;
}

/** Each frame's head and tail as UTF-8, made once: the chain hashes them with every event of the frame. */
const frameBytes = new WeakMap<AuditFrame, { head: Buffer; tail: Buffer }>();

/** Feeds `hash` the stored JSON of a framed event, piece by piece (the bytes framedContent's text would give). */
export function hashFramed(hash: Hash, id: string, framed: Framed): Hash {
  let bytes = frameBytes.get(framed.frame);
  if (!bytes) {
    bytes = { head: Buffer.from(framed.frame.head), tail: Buffer.from(framed.frame.tail) };
    frameBytes.set(framed.frame, bytes);
  }
  return hash.update(`${PREFIX}${id}",`).update(bytes.head).update(framed.body).update(bytes.tail);
}

/**
 * SQL (SQLite and PostgreSQL): the stored JSON of the journal row `j`, joined as
 * `LEFT JOIN audit_journal_frame f ON f.id = j.frame`; NULL when the row names a frame that is
 * gone (which fails a move and is reported by $verify).
 */
export const JOURNAL_CONTENT = `CASE WHEN j.frame IS NULL THEN j.content ELSE '${PREFIX}' || j.id || '",' || f.head || j.content || f.tail END`;

/**
 * Serialises the events of one request (as built, in order) into frames and bodies. Consecutive
 * events that share a head and a tail share one frame object.
 */
export class AuditFramer {
  /** Each object's JSON, made once: the request-level parts are the same objects in every event. */
  private readonly json = new WeakMap<object, string>();
  /** How many last entities each event shares with its neighbour (by identity). */
  private readonly shared = new Map<AuditEvent, number>();
  private meta?: { lastUpdated: number; json: string };
  private previous?: { lastUpdated: number; members: readonly [string, unknown][]; ends: readonly object[]; frame: AuditFrame };

  constructor(events: readonly AuditEvent[]) {
    events.forEach((e, i) => {
      const other = events[i + 1] ?? events[i - 1];
      this.shared.set(e, other ? sharedEnd(e.entity, other.entity) : 0);
    });
  }

  /**
   * The event's JSON as version 1 stored at `lastUpdated` (what JSON.stringify gives for it with
   * its meta, store/write.ts), framed; undefined when it cannot be framed.
   */
  frame(event: AuditEvent, lastUpdated: number): FramedJson | undefined {
    const shared = this.shared.get(event);
    if (shared === undefined) return undefined;
    const { resourceType, id, meta, entity } = event;
    if (resourceType !== 'AuditEvent' || meta !== undefined || id === undefined || !PLAIN_ID.test(id) || !Array.isArray(entity) || entity.length === 0) return undefined;
    // What JSON.stringify would treat specially is left to it: the event is then stored whole.
    if (typeof (event as { toJSON?: unknown }).toJSON === 'function') return undefined;
    for (let i = 0; i < entity.length; i++) if (typeof entity[i] !== 'object' || entity[i] === null) return undefined;
    // The members between meta and entity, in the object's order (JSON.stringify's), and entity last.
    const members: [string, unknown][] = [];
    let last: string | undefined;
    for (const k of Object.keys(event)) {
      if (k === 'resourceType' || k === 'id' || k === 'meta') continue;
      last = k;
      const v = (event as unknown as Record<string, unknown>)[k];
      if (typeof v === 'function' || typeof v === 'symbol') return undefined;
      if (k !== 'entity' && v !== undefined) members.push([k, v]);
    }
    if (last !== 'entity') return undefined;
    const cut = entity.length - shared;
    const frame = this.frameOf(lastUpdated, members, shared ? entity.slice(cut) : []);
    let body = '';
    for (let i = 0; i < cut; i++) body += `${i ? ',' : ''}${ownJson(entity[i])}`;
    if (cut > 0 && shared > 0) body += ',';
    return { content: framedContent(id, frame, body), frame, body };
  }

  /**
   * The frame of an event with these members and last entities: the previous event's when they
   * are the same values (the same objects) or the same JSON, as they are for a request's events
   * but for the patients it refused; else a new one. Only the previous event's frame is reused,
   * never an earlier one: a frame's events are consecutive in the journal, which is what lets a
   * move delete the frames it is done with (store/audit-journal.ts).
   */
  private frameOf(lastUpdated: number, members: readonly [string, unknown][], ends: readonly object[]): AuditFrame {
    const prev = this.previous;
    if (prev && prev.lastUpdated === lastUpdated && sameMembers(prev.members, members) && sameObjects(prev.ends, ends)) return prev.frame;
    let head = this.metaJson(lastUpdated);
    for (const [k, v] of members) head += `,${JSON.stringify(k)}:${this.of(v)}`;
    head += ',"entity":[';
    let tail = '';
    for (const [i, e] of ends.entries()) tail += `${i ? ',' : ''}${this.of(e)}`;
    tail += ']}';
    const frame = prev && prev.frame.head === head && prev.frame.tail === tail ? prev.frame : { head, tail };
    this.previous = { lastUpdated, members, ends, frame };
    return frame;
  }

  private metaJson(lastUpdated: number): string {
    if (this.meta?.lastUpdated !== lastUpdated) this.meta = { lastUpdated, json: `"meta":${JSON.stringify({ versionId: '1', lastUpdated: new Date(lastUpdated).toISOString() })}` };
    return this.meta.json;
  }

  private of(value: unknown): string {
    if (typeof value !== 'object' || value === null) return JSON.stringify(value);
    let json = this.json.get(value);
    if (json === undefined) {
      json = JSON.stringify(value);
      this.json.set(value, json);
    }
    return json;
  }
}

/** The JSON of frozen objects (constants shared by every event, audit/balp.ts), made once: they cannot change. */
const frozenJson = new WeakMap<object, string>();
/** `"key":` for the member names of entities (a handful: type, role, what, …), made once. */
const keyJson = new Map<string, string>();

/**
 * JSON.stringify of one of an event's own entities, its frozen members taken from frozenJson: an
 * entity is mostly its codings. Its own objects are not remembered (WeakMap entries for a
 * thousand objects a page cost more than they save).
 */
function ownJson(entity: object): string {
  if (Array.isArray(entity) || typeof (entity as { toJSON?: unknown }).toJSON === 'function') return JSON.stringify(entity);
  let out = '';
  for (const k of Object.keys(entity)) {
    const v = (entity as Record<string, unknown>)[k];
    let json: string | undefined;
    if (typeof v === 'object' && v !== null) {
      json = frozenJson.get(v);
      if (json === undefined) {
        json = JSON.stringify(v);
        if (json !== undefined && Object.isFrozen(v)) frozenJson.set(v, json);
      }
    } else json = JSON.stringify(v);
    // What JSON.stringify leaves out (undefined, functions, symbols) gives undefined here too.
    if (json !== undefined) {
      let key = keyJson.get(k);
      if (key === undefined) {
        key = `${JSON.stringify(k)}:`;
        if (keyJson.size < 64) keyJson.set(k, key);
      }
      out += `${out ? ',' : '{'}${key}${json}`;
    }
  }
  return out ? `${out}}` : '{}';
}

/** Whether two events have the same members (names, and values: the same objects). */
function sameMembers(a: readonly [string, unknown][], b: readonly [string, unknown][]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i][0] !== b[i][0] || a[i][1] !== b[i][1]) return false;
  return true;
}

/** Whether two lists hold the same objects. */
function sameObjects(a: readonly object[], b: readonly object[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** How many last elements two arrays share (the same objects). */
function sharedEnd(a: readonly unknown[] | undefined, b: readonly unknown[] | undefined): number {
  if (!a || !b) return 0;
  let n = 0;
  while (n < a.length && n < b.length && a[a.length - 1 - n] === b[b.length - 1 - n]) n++;
  return n;
}
