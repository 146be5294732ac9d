import { Store } from '../../server/store/store';
import { bulkAuditEvent } from './fixtures';

/**
 * A process for test/audit/halt.test.ts: opens a SQLite store, has its audit worker commit a few
 * thousand events and then index them (a catch-up: script after script on the worker's
 * connection), and exits with code 1 while the worker is at it, as main.ts does when a start-up
 * fails after the store opened or a shutdown times out. With `halt` it halts the store first
 * (Store.halt). Prints how many events there were to index, and how many were left when it decided to exit.
 * With `verify`, it exits (halting the store) while a verification of the chain runs on its thread instead.
 *
 *   node halt-exit.js <storage> halt|plain|verify
 */
async function main(): Promise<void> {
  const [storage, mode] = process.argv.slice(2);
  const store = await Store.open({ dialect: 'sqlite', storage: storage!, synchronous: 'FULL' }, { now: Date.now });
  const writer = { clientId: 'halt-test', organization: null };
  for (let k = 0; k < 8; k++) await store.appendAudit([{ events: Array.from({ length: 1000 }, (_, i) => bulkAuditEvent(k * 1000 + i, 500)) }], writer);
  if (mode === 'verify') {
    // A verification under way on its thread when the process exits, halfway through by the time
    // a whole one took (its answer is printed).
    const t = performance.now();
    await store.verifier.verify({});
    const took = performance.now() - t;
    const verified = store.verifier.verify({}).then(
      (report) => `verify: ${report.ok ? 'intact' : 'broken'} ${report.links}`,
      (err: Error) => `verify: failed: ${err.message}`,
    );
    await new Promise((resolve) => setTimeout(resolve, took / 2));
    await store.halt();
    process.stdout.write(`${await verified}\n`);
    process.exit(1);
  }
  const before = await store.auditIndex.backlog();
  // The worker moves the journal and indexes the queue, script after script, until it is done.
  void store.auditIndex.catchUp().catch(() => undefined);
  let left = before;
  while (left >= before) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    left = await store.auditIndex.backlog();
  }
  process.stdout.write(`backlog ${before} ${left}\n`);
  if (mode === 'halt') await store.halt();
  process.exit(1);
}

void main();
