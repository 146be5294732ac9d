import { randomBytes } from 'node:crypto';
import type { Resource } from 'fhir/r4';

/**
 * Resources that go out exactly as the store holds them.
 *
 * A search page is dozens to a thousand resources of up to a kilobyte or more each. Writing each
 * one out again is not needed: the text the store holds is what JSON.stringify would write (the
 * store writes every resource with JSON.stringify, whose output it reproduces from what it
 * parses). Nor is parsing it, when nothing but the text is sent: the decisions read the row's
 * patients (store/records.ts), so a page of Consents for a national service is never parsed.
 *
 * A resource that goes out as stored is a StoredJson in the response body: bodyJson splices its
 * text in; anything else that serialises it (a pretty-printed body) gets the resource, parsed.
 * The text is only ever one the server wrote; a row edited in the database behind its back
 * goes out as edited, unchecked (parsed, malformed text used to fail the request instead).
 */
export class StoredJson {
  constructor(readonly text: string) {}

  /** While bodyJson runs, a placeholder its text replaces; otherwise the resource itself. */
  toJSON(): unknown {
    if (splicing) {
      splicing.push(this.text);
      return `${NONCE}:${splicing.length - 1}`;
    }
    return JSON.parse(this.text) as unknown;
  }
}

/**
 * A stored resource's text, to stand where the resource goes in a response body. It is not the
 * resource: nothing may read its fields (it only serialises as the resource).
 */
export function storedResource(text: string): Resource {
  return new StoredJson(text) as unknown as Resource;
}

/** Secret to this process: no client can write a string that passes for a placeholder. */
const NONCE = randomBytes(16).toString('hex');
/** The texts of the StoredJson serialised so far by the bodyJson under way (JSON.stringify is synchronous). */
let splicing: string[] | undefined;

/**
 * The JSON text of a response body. Each StoredJson is written while serialising as a
 * placeholder string holding NONCE (so no string a client sent can pass for one), and the
 * placeholders, quotes included, are then replaced by the stored texts. Pretty-printed, the
 * resources are parsed and indented like the rest.
 */
export function bodyJson(body: unknown, pretty: boolean): string {
  if (pretty) return JSON.stringify(body, null, 2);
  const texts: string[] = [];
  let skeleton: string;
  splicing = texts;
  try {
    skeleton = JSON.stringify(body);
  } finally {
    splicing = undefined;
  }
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
