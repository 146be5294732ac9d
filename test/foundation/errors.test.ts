import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ERRORS } from '../../server/errors';

describe('Foundation: the README error table is the error catalogue', () => {
  it('lists every catalogue code with its status, and nothing else', () => {
    const readme = fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Errors'), readme.indexOf('\n## ', readme.indexOf('## Errors') + 5));
    const rows = [...section.matchAll(/^\| `([a-z-]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    const catalogue = Object.entries(ERRORS).map(([code, e]) => [code, e.status]);
    assert.deepEqual(rows, catalogue);
  });
});
