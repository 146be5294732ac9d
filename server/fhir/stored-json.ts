import { randomBytes } from 'node:crypto';

/**
 * Resources that go out exactly as the store holds them.
 *
 * A search page of AuditEvents is dozens of resources of a kilobyte or more each: parsing each
 * one is needed (the consent decision reads it), writing each one back out is not, since the
 * text it was parsed from is what JSON.stringify would write (the store writes every resource
 * with JSON.stringify, whose output it reproduces from what it parses). A resource marked here
 * is written out as that text; everything else in the body (the Bundle around it, links,
 * OperationOutcomes, shaped resources) is serialised as usual.
 *
 * Only resources nothing has changed since they were parsed may be marked: the text goes out,
 * not the object.
 */
const stored = new WeakMap<object, string>();
const carriers = new WeakSet<object>();
/** Secret to this process: no client can write a string that passes for a placeholder. */
const NONCE = randomBytes(16).toString('hex');

/** `resource` (parsed from `text` and unchanged since), to be written out as `text`. */
export function asStored<T extends object>(resource: T, text: string): T {
  stored.set(resource, text);
  return resource;
}

/** Marks a response body that holds resources marked asStored (only such bodies take the longer path). */
export function carriesStored<T extends object>(body: T): T {
  carriers.add(body);
  return body;
}

/**
 * The JSON text of a response body. Marked resources are replaced while serialising by a
 * placeholder string holding NONCE (so no string a client sent can pass for one), and the
 * placeholders, quotes included, by the stored texts.
 */
export function bodyJson(body: unknown, pretty: boolean): string {
  if (pretty) return JSON.stringify(body, null, 2);
  if (typeof body !== 'object' || body === null || !carriers.has(body)) return JSON.stringify(body);
  const texts: string[] = [];
  const skeleton = JSON.stringify(body, (_key, value: unknown) => {
    if (typeof value === 'object' && value !== null) {
      const text = stored.get(value);
      if (text !== undefined) {
        texts.push(text);
        return `${NONCE}:${texts.length - 1}`;
      }
    }
    return value;
  });
  if (texts.length === 0) return skeleton;
  const out: string[] = [];
  const marker = `"${NONCE}:`;
  let at = 0;
  for (;;) {
    const start = skeleton.indexOf(marker, at);
    if (start < 0) break;
    const end = skeleton.indexOf('"', start + marker.length);
    out.push(skeleton.slice(at, start), texts[Number(skeleton.slice(start + marker.length, end))]);
    at = end + 1;
  }
  out.push(skeleton.slice(at));
  return out.join('');
}
