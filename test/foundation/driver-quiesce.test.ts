import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * sqliteQuiesce (store/driver.ts): a thread about to stop refuses new SQLite operations and waits
 * for those under way, because a thread that stops with one under way aborts the whole process
 * (node-sqlite3 calls back into a thread that is gone). Each case runs a worker thread in a child
 * process of its own, so that an abort takes down only the child. Engine-independent: the SQLite
 * file is a scratch one.
 */
describe('Driver: a thread quiesces SQLite before it stops', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custodian-quiesce-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const run = (quiesce: boolean) => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const worker = new Worker(${JSON.stringify(path.join(__dirname, '../support/quiesce-worker.js'))}, { workerData: ${JSON.stringify({ storage: path.join(dir, `q-${quiesce}.sqlite`), quiesce })} });
      worker.on('message', (events) => process.stdout.write(JSON.stringify(events) + '\\n'));
      worker.on('exit', (code) => process.stdout.write('worker exit ' + code + '\\n'));`;
    return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  };

  it('refuses new operations at once, and lets the thread exit only after the one under way has finished', () => {
    const child = run(true);
    assert.equal(child.status, 0, child.stderr);
    const [events, exit] = child.stdout.trim().split('\n');
    assert.deepEqual(JSON.parse(events!), ['new query refused: quiescing', 'slow query done: 3000000', 'quiesced']);
    assert.equal(exit, 'worker exit 3');
  });

  it('why: the same thread exiting with the query under way aborts its whole process', () => {
    const child = run(false);
    assert.equal(child.signal, 'SIGABRT', `expected node-sqlite3 to abort the process; status ${child.status}, stdout ${child.stdout}`);
    assert.match(child.stderr, /FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw/);
    assert.doesNotMatch(child.stdout, /worker exit/);
  });
});
