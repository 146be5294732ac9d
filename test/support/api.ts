import assert from 'node:assert/strict';
import type { Express } from 'express';
import type { Bundle } from 'fhir/r4';
import supertest from 'supertest';
import { schemaValidator } from '../../server/validation/schema';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete' | 'head';

export interface ApiOptions {
  body?: unknown;
  headers?: Record<string, string>;
  /** Defaults to application/fhir+json when a body is given. */
  contentType?: string;
  /** Send `body` as-is (a string), not JSON-encoded. */
  raw?: boolean;
}

export interface ApiResponse {
  status: number;
  headers: Record<string, string>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  text: string;
}

/**
 * Drives an app through the real HTTP stack (supertest) and checks every JSON body it gets
 * back against the official R4 JSON schema, so no test can pass on a malformed response.
 */
export class Api {
  constructor(
    private readonly app: Express,
    /** Sent as `Authorization: Bearer …` unless a test sets its own Authorization header. */
    readonly bearer?: string,
  ) {}

  async request(method: Method, path: string, options: ApiOptions = {}): Promise<ApiResponse> {
    let req = supertest(this.app)[method](path).buffer(true).parse((res, cb) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (data += chunk));
      res.on('end', () => cb(null, data));
    });
    if (this.bearer && !Object.keys(options.headers ?? {}).some((k) => k.toLowerCase() === 'authorization')) req = req.set('Authorization', `Bearer ${this.bearer}`);
    for (const [k, v] of Object.entries(options.headers ?? {})) req = req.set(k, v);
    if (options.body !== undefined) {
      req = req.set('Content-Type', options.contentType ?? 'application/fhir+json');
      req = req.send(options.raw ? (options.body as string) : JSON.stringify(options.body));
    }
    const res = await req;
    const text = typeof res.body === 'string' ? res.body : '';
    let body: unknown = undefined;
    if (text && /json/.test(String(res.headers['content-type'] ?? '')) && !/ndjson/.test(String(res.headers['content-type']))) {
      body = JSON.parse(text);
      // FHIR endpoints answer with FHIR; the SMART endpoints answer with OAuth/SMART JSON.
      if (!/^\/(auth\/token|\.well-known\/|healthz|_export\/)/.test(path)) assertValidFhir(body, `${method.toUpperCase()} ${path} -> ${res.status}`);
    }
    return { status: res.status, headers: res.headers as Record<string, string>, body, text };
  }

  get(path: string, headers?: Record<string, string>) {
    return this.request('get', path, { headers });
  }
  /** A search (or any GET) that must answer 200 with a Bundle: the Bundle. */
  async bundle(path: string, headers?: Record<string, string>): Promise<Bundle> {
    const res = await this.get(path, headers);
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 500));
    return res.body as Bundle;
  }
  post(path: string, body: unknown, headers?: Record<string, string>) {
    return this.request('post', path, { body, headers });
  }
  put(path: string, body: unknown, headers?: Record<string, string>) {
    return this.request('put', path, { body, headers });
  }
  patch(path: string, body: unknown, headers?: Record<string, string>) {
    return this.request('patch', path, { body, headers, contentType: 'application/json-patch+json' });
  }
  delete(path: string, headers?: Record<string, string>) {
    return this.request('delete', path, { headers });
  }
}

/** Every body the server sends must be a valid R4 resource. */
export function assertValidFhir(body: unknown, where: string): void {
  const type = (body as { resourceType?: string })?.resourceType;
  assert.ok(typeof type === 'string', `${where}: response body has no resourceType: ${JSON.stringify(body).slice(0, 200)}`);
  const issues = schemaValidator().validate(type, body);
  assert.deepEqual(issues, [], `${where}: response body is not valid FHIR R4: ${JSON.stringify(issues).slice(0, 800)}`);
  // What the schema does not say but the JSON format does: no empty arrays, objects or strings,
  // and no null but the gaps that line a repeating primitive up with its `_` extensions.
  const walk = (v: unknown, path: string, twin?: unknown): void => {
    if (v === null) {
      assert.ok(twin !== undefined && twin !== null, `${where}: null at ${path}`);
      return;
    }
    assert.ok(v !== '', `${where}: empty string at ${path}`);
    if (Array.isArray(v)) {
      assert.ok(v.length > 0, `${where}: empty array at ${path}`);
      const partner = Array.isArray(twin) ? twin : [];
      v.forEach((x, i) => walk(x, `${path}[${i}]`, partner[i]));
    } else if (v && typeof v === 'object') {
      const node = v as Record<string, unknown>;
      assert.ok(Object.keys(node).length > 0, `${where}: empty object at ${path}`);
      for (const [k, x] of Object.entries(node)) walk(x, `${path}.${k}`, Array.isArray(x) ? node[k.startsWith('_') ? k.slice(1) : `_${k}`] : undefined);
    }
  };
  walk(body, type);
}
