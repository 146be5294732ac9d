import { parentPort, workerData } from 'node:worker_threads';
import { Sequelize } from 'sequelize';
import { verifyChain } from './audit-chain';
import { openDriver, openSqliteReadOnly, sqliteQuiesce, type Driver } from './driver';
import { verifyPgOptions, type FromVerifyWorker, type ToVerifyWorker, type VerifySetup } from './verify-thread';
import { WriterLock } from './writer-lock';

/**
 * A verification thread (verify-thread.ts says why): walks the audit chain over connections of
 * its own, answers with the report, and exits. It only reads.
 */
let leaving = false;
let driver: Driver | undefined;

/** Exits once no SQLite operation of this thread is under way (sqliteQuiesce says why). */
function leave(code: number, why: string): void {
  if (leaving) return;
  leaving = true;
  void sqliteQuiesce(new Error(why), 5000).finally(() => process.exit(code));
}

function failed(err: unknown): void {
  const e = err as { code?: unknown; name?: unknown };
  parentPort!.postMessage({
    kind: 'failed',
    error: err instanceof Error ? err.message : String(err),
    ...(typeof e?.code === 'string' ? { code: e.code } : {}),
    ...(typeof e?.name === 'string' ? { name: e.name } : {}),
  } satisfies FromVerifyWorker);
}

for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (err: unknown) => {
    failed(err);
    leave(1, 'the verification thread has failed');
  });
}
parentPort!.on('message', (m: ToVerifyWorker) => {
  if (m.kind !== 'halt') return;
  // The walk's last checks are full scans: end the one under way rather than wait for it.
  driver?.interrupt?.();
  leave(1, 'the verification was stopped');
});

async function main(): Promise<void> {
  const { database, options, statementTimeoutMs } = workerData as VerifySetup;
  let sequelize: Sequelize | undefined;
  if (database.dialect === 'sqlite') {
    // Its own connections, both read-only (a reader and an unused writer), no checkpointer; it
    // never takes the writer lock, and cannot write whatever it runs.
    driver = await openSqliteReadOnly({ storage: database.storage, synchronous: database.synchronous, busyTimeoutMs: database.busyTimeoutMs ?? 10000, lock: WriterLock.buffer() });
  } else {
    sequelize = new Sequelize(database.url, verifyPgOptions(statementTimeoutMs));
    driver = await openDriver(sequelize);
  }
  try {
    const report = await verifyChain(driver, options);
    parentPort!.postMessage({ kind: 'report', report } satisfies FromVerifyWorker);
  } finally {
    await driver.close().catch(() => undefined);
    await sequelize?.close().catch(() => undefined);
  }
}

main().then(
  () => leave(0, 'the verification is done'),
  (err: unknown) => {
    failed(err);
    leave(1, 'the verification thread has failed');
  },
);
