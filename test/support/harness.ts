import { buildApp, type App } from '../../server/app';
import { loadConfig, type Config } from '../../server/config';
import type { AccessPolicy } from '../../server/gate/policy';
import { createLogger } from '../../server/log';
import { Store } from '../../server/store/store';
import { Api } from './api';
import { freshDatabase, type TestDatabase } from './db';

export interface Harness {
  readonly api: Api;
  readonly app: App;
  readonly store: Store;
  readonly config: Config;
  readonly db: TestDatabase;
  /** The clock the app runs on; tests move it instead of sleeping. */
  readonly clock: { now: number; auto: boolean };
  close(): Promise<void>;
}

export interface HarnessOptions {
  env?: Record<string, string>;
  policy?: AccessPolicy;
  /** A frozen clock (ms); default: real time. */
  frozenAt?: number;
}

/** A fresh database and app, driven in-process through the real HTTP stack. */
export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const db = await freshDatabase();
  const config = loadConfig({ CUSTODIAN_BASE_URL: 'http://custodian.test/fhir', LOG_LEVEL: 'silent', ...options.env }, process.cwd());
  const clock = { now: options.frozenAt ?? Date.now(), auto: options.frozenAt === undefined };
  const now = () => (clock.auto ? Date.now() : clock.now);
  const store = await Store.open(db.config, { now, localBase: config.baseUrl });
  const app = buildApp({ config, store, now, logger: createLogger('silent'), policy: options.policy });
  return {
    api: new Api(app.express),
    app,
    store,
    config,
    db,
    clock,
    async close() {
      await store.close();
      await db.drop();
    },
  };
}
