import { parentPort, workerData } from 'node:worker_threads';
import { openSqliteWriter, sqliteQuiesce } from '../../server/store/driver';
import { WriterLock } from '../../server/store/writer-lock';

/**
 * A thread for test/foundation/driver-quiesce.test.ts: starts a slow query on a SQLite connection
 * of its own, then exits with code 3, as the audit worker does when it fails. With `quiesce` it
 * first quiesces (and reports the order things happened in); without, it exits with the query
 * under way.
 */
async function main(): Promise<void> {
  const { storage, quiesce } = workerData as { storage: string; quiesce: boolean };
  const driver = await openSqliteWriter({ storage, synchronous: 'FULL', busyTimeoutMs: 1000, lock: WriterLock.buffer() }, 'worker');
  const events: string[] = [];
  // Three million rows of a recursive CTE: a few hundred ms, under way when the thread goes on.
  const slow = driver
    .get<{ n: number }>('WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000000) SELECT COUNT(*) AS n FROM c')
    .then((row) => events.push(`slow query done: ${row?.n}`));
  await new Promise((resolve) => setImmediate(resolve));
  if (!quiesce) process.exit(3);
  const quiesced = sqliteQuiesce(new Error('quiescing')).then(() => events.push('quiesced'));
  const refused = await driver.get('SELECT 1 AS one').then(
    () => 'ran',
    (err: Error) => `refused: ${err.message}`,
  );
  events.push(`new query ${refused}`);
  await Promise.all([slow, quiesced]);
  parentPort!.postMessage(events);
  process.exit(3);
}

void main();
