import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(rel));
    else if (entry.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

/** Value imports (not `import type`) of a file, resolved to repository-relative paths. */
function valueImports(file: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^import\s+(?!type\b)[^;]*?from\s+'(\.[^']+)'/gm)) {
    out.push(path.join(path.dirname(file), m[1]).replace(/\\/g, '/'));
  }
  return out;
}

describe('Architecture: the store is reachable only through the gate', () => {
  const files = [...sources('server'), ...sources('resources')];

  it('only the gate, the store itself and the wiring (app.ts, main.ts) import the store', () => {
    const allowed = (f: string) => f.startsWith('server/gate/') || f.startsWith('server/store/') || f === 'server/app.ts' || f === 'server/main.ts';
    const offenders = files.filter((f) => !allowed(f)).flatMap((f) => valueImports(f).filter((i) => i.startsWith('server/store/')).map((i) => `${f} -> ${i}`));
    assert.deepEqual(offenders, []);
  });

  it('nothing outside the gate and the store imports the store read API, even for types', () => {
    const offenders = files.filter((f) => !f.startsWith('server/gate/') && !f.startsWith('server/store/')).filter((f) => /from '[^']*store\/(read|driver|write)'/.test(fs.readFileSync(path.join(ROOT, f), 'utf8')));
    assert.deepEqual(offenders, []);
  });

  it('the HTTP layer and the operations hold no Store', () => {
    const offenders = files.filter((f) => f.startsWith('server/http/') || f.startsWith('server/operations/') || f.startsWith('server/interactions/')).filter((f) => /\bStore\b/.test(fs.readFileSync(path.join(ROOT, f), 'utf8').replace(/StoredVersion/g, '')));
    assert.deepEqual(offenders, []);
  });

  it('only the authentication middleware reads the Authorization header; everything else sees the AccessContext', () => {
    const readers = files.filter((f) => /get\(['"]authorization['"]\)|headers\.authorization/i.test(fs.readFileSync(path.join(ROOT, f), 'utf8')));
    assert.deepEqual(readers, ['server/access/authenticate.ts']);
  });

  it('this test can fail: it sees a store import planted in a handler', () => {
    const planted = "import { StoreReader } from '../store/read';";
    const m = /^import\s+(?!type\b)[^;]*?from\s+'(\.[^']+)'/m.exec(planted);
    assert.equal(path.join('server/http', m![1]).replace(/\\/g, '/'), 'server/store/read');
  });
});
