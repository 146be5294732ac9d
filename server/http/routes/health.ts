import { Router } from 'express';
import type { AuditWriter } from '../../audit/writer';

/**
 * `GET /healthz`: 200 when the database accepts writes (so the audit trail can be written),
 * 503 otherwise. Public, unaudited, JSON (not FHIR), for load balancers and orchestrators.
 */
export function healthRoutes(probeWrite: () => Promise<void>, writer: AuditWriter | undefined, indexBacklog: () => Promise<number>): Router {
  const router = Router();
  router.get('/healthz', async (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    try {
      await probeWrite();
      res.status(200).end(
        JSON.stringify({
          status: 'ok',
          audit: writer ? 'on' : 'OFF (bench only)',
          auditEventsWritten: writer?.written ?? 0,
          largestAuditBatch: writer?.largestBatch ?? 0,
          auditIndexBacklog: await indexBacklog(),
        }),
      );
    } catch (err) {
      res.status(503).end(JSON.stringify({ status: 'unavailable', reason: 'the database does not accept writes, so the audit trail cannot be written', error: (err as Error).message }));
    }
  });
  return router;
}
