import { randomUUID } from 'node:crypto';
import { Router, type Request, type Response } from 'express';
import type { Bundle } from 'fhir/r4';
import { auditAs } from '../../audit/hold';
import { backgroundRefusal } from '../../access/background';
import { FhirError } from '../../errors';
import { parseSubscription } from '../../feed/subscription-rules';
import type { SubscriptionRecord } from '../../store/subscriptions';
import type { HttpDeps } from '../deps';
import { sendJson } from '../format';
import { ctxOf, locals, logicalId, parseETag, preferOf, queryPairs } from '../request';

/** Search parameters of GET /Subscription (the client's own Subscriptions). */
const SEARCH = new Set(['status', '_id', '_count', '_format', '_pretty']);

/**
 * `Subscription` (R4, channel rest-hook) over REST: create, read, update, delete and search, each
 * on the caller's own Subscriptions only. Thin handlers: the rules are feed/subscription-rules.ts,
 * the access checks and storage the gate's (gate/subscriptions.ts).
 */
export function subscriptionRoutes(deps: HttpDeps): Router {
  const router = Router();
  const gate = deps.feed.subscriptions;
  const location = (res: Response, s: SubscriptionRecord) => `${locals(res).baseUrl}/Subscription/${s.id}/_history/${s.versionId}`;
  const send = (res: Response, status: number, s: SubscriptionRecord, req: Request) => {
    const headers = { ETag: `W/"${s.versionId}"`, 'Last-Modified': new Date(s.resource.meta!.lastUpdated!).toUTCString(), Location: location(res, s) };
    if (preferOf(req).return === 'minimal') {
      res.status(status);
      for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
      res.end();
      return;
    }
    sendJson(res, status, s.resource, headers);
  };
  // Every access to a Subscription, not just its creation: it holds the receiver's headers
  // (secrets), and deleting it drops what it had queued. A token of a trusted issuer naming the
  // client's id, or one the client was issued before its key was taken out of the registry, is
  // not the registered client.
  const background = (res: Response) => {
    const refusal = backgroundRefusal(ctxOf(res), deps.registry, 'Subscriptions');
    if (refusal) throw new FhirError('forbidden', refusal);
  };

  router.post('/Subscription', async (req, res) => {
    auditAs(req, res, 'create');
    background(res);
    const input = parseSubscription(req.body, deps.config.feed.subscriptionEndpoints);
    send(res, 201, await gate.create(ctxOf(res), randomUUID(), input, locals(res).baseUrl), req);
  });

  router.get('/Subscription', async (req, res) => {
    auditAs(req, res, 'search-type', { query: true });
    background(res);
    const pairs = queryPairs(req);
    for (const [k] of pairs) if (!SEARCH.has(k)) throw new FhirError('invalid-search', `Subscription search supports status and _id only, not ${k}`, { expression: [k] });
    const status = pairs.filter(([k]) => k === 'status').flatMap(([, v]) => v.split(','));
    const ids = pairs.filter(([k]) => k === '_id').flatMap(([, v]) => v.split(','));
    const found = (await gate.search(ctxOf(res))).filter((s) => (!status.length || status.includes(s.status)) && (!ids.length || ids.includes(s.id)));
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'searchset',
      total: found.length,
      link: [{ relation: 'self', url: `${locals(res).baseUrl}${req.originalUrl}` }],
      ...(found.length ? { entry: found.map((s) => ({ fullUrl: `${locals(res).baseUrl}/Subscription/${s.id}`, resource: s.resource, search: { mode: 'match' as const } })) } : {}),
    };
    sendJson(res, 200, bundle);
  });

  router.all('/Subscription/_history', (req) => {
    throw new FhirError('method-not-allowed', `${req.method} ${req.path} is not supported: Subscriptions keep no history`, { headers: { Allow: 'GET, POST' } });
  });

  router.get('/Subscription/:id', async (req, res) => {
    auditAs(req, res, 'read');
    background(res);
    send(res, 200, await gate.read(ctxOf(res), logicalId(req.params.id)), req);
  });

  router.put('/Subscription/:id', async (req, res) => {
    auditAs(req, res, 'update');
    background(res);
    const id = logicalId(req.params.id);
    const input = parseSubscription(req.body, deps.config.feed.subscriptionEndpoints, id);
    send(res, 200, await gate.update(ctxOf(res), id, input, parseETag(req.get('if-match'), 'If-Match')), req);
  });

  router.delete('/Subscription/:id', async (req, res) => {
    auditAs(req, res, 'delete');
    background(res);
    await gate.delete(ctxOf(res), logicalId(req.params.id));
    res.status(204).end();
  });

  router.all('/Subscription', (req) => {
    throw new FhirError('method-not-allowed', `${req.method} is not supported on /Subscription`, { headers: { Allow: 'GET, POST' } });
  });
  router.all('/Subscription/*rest', (req) => {
    throw new FhirError('method-not-allowed', `${req.method} ${req.path} is not supported (Subscription offers create, read, update, delete and search)`, { headers: { Allow: 'GET, PUT, DELETE' } });
  });
  return router;
}
