import { Router } from 'express';
import type { AuditWriter } from '../../audit/writer';
import type { Logger } from '../../log';

export interface HealthOptions {
  /** Writes to the database (the audit trail must be writable for the server to be healthy). */
  readonly probeWrite: () => Promise<void>;
  readonly writer: AuditWriter | undefined;
  readonly indexBacklog: () => Promise<number>;
  readonly now: () => number;
  readonly logger: Logger;
  /** How long one check answers for, ms: callers within it share its result, so the route cannot be used to load the database. */
  readonly maxAgeMs?: number;
}

interface Health {
  readonly status: number;
  readonly body: string;
}

/**
 * `GET /healthz`: 200 when the database accepts writes (so the audit trail can be written),
 * 503 otherwise. Public, unaudited, JSON (not FHIR), for load balancers and orchestrators.
 *
 * Anyone may call it, so it gives nothing away and costs little: the 503 body says only that the
 * database does not accept writes (the error goes to the server log), and a check is reused for
 * `maxAgeMs` (1 s) — concurrent callers share the one in flight — so at most one write probe
 * reaches the database per second, however often the route is called.
 */
export function healthRoutes(options: HealthOptions): Router {
  const { now, logger } = options;
  const maxAge = options.maxAgeMs ?? 1000;
  let last: { at: number; health: Promise<Health> } | undefined;

  const check = async (): Promise<Health> => {
    try {
      await options.probeWrite();
      return {
        status: 200,
        body: JSON.stringify({
          status: 'ok',
          audit: options.writer ? 'on' : 'OFF (bench only)',
          auditEventsWritten: options.writer?.written ?? 0,
          largestAuditBatch: options.writer?.largestBatch ?? 0,
          auditCommits: options.writer?.commits ?? 0,
          auditAppendFallbacks: options.writer?.appendFallbacks ?? 0,
          auditIndexBacklog: await options.indexBacklog(),
        }),
      };
    } catch (err) {
      logger.error('health check failed: the database does not accept writes', { error: (err as Error).message, code: (err as { code?: string }).code });
      return { status: 503, body: JSON.stringify({ status: 'unavailable', reason: 'the database does not accept writes, so the audit trail cannot be written' }) };
    }
  };

  const router = Router();
  router.get('/healthz', async (_req, res) => {
    const at = now();
    if (!last || at - last.at >= maxAge || at < last.at) last = { at, health: check() };
    const health = await last.health;
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.status(health.status).end(health.body);
  });
  return router;
}
