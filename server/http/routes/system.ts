import { Router } from 'express';
import { auditAs, recordQuery } from '../../audit/hold';
import { FhirError } from '../../errors';
import { processBundle } from '../../interactions/bundle';
import { historyBundle } from '../../interactions/reads';
import { systemSearchBundle } from '../../interactions/search';
import { operation } from '../../operations/registry';
import { capabilityStatement } from '../capability';
import { partFailure } from '../errors';
import { bundleOptions, envOf, type HttpDeps } from '../deps';
import { sendJson } from '../format';
import { ctxOf, locals, preferOf, queryPairs } from '../request';

/** System-level interactions: capabilities, batch/transaction, system history. */
export function systemRoutes(deps: HttpDeps): Router {
  const router = Router();

  router.get('/metadata', (_req, res) => {
    sendJson(res, 200, capabilityStatement(locals(res).baseUrl, deps.audience.tokenEndpoint, deps.now(), deps.config.consentDefault));
  });

  router.post('/', async (req, res) => {
    auditAs(req, res, (req.body as { type?: string } | undefined)?.type === 'transaction' ? 'transaction' : 'batch');
    if (res.locals.bodyKind !== 'json') throw new FhirError('invalid-request', 'POST to the base URL takes a batch or transaction Bundle as application/fhir+json');
    const options = {
      ...bundleOptions(req, res, deps, ''),
      asked: (entries: readonly string[]) => recordQuery(req, res, { entries }),
      maxEntries: deps.config.maxBundleEntries,
      returnPreference: preferOf(req).return ?? 'representation',
      entryFailure: (err: unknown, index: number) => partFailure(deps.logger, locals(res).requestId, err, { entry: index }),
    };
    sendJson(res, 200, await processBundle(deps.gate, ctxOf(res), envOf(res, deps), req.body, options));
  });

  router.get('/_history', async (req, res) => {
    auditAs(req, res, 'history-system', { query: true });
    sendJson(res, 200, await historyBundle(deps.gate, ctxOf(res), envOf(res, deps), {}, queryPairs(req), bundleOptions(req, res, deps, '_history')));
  });

  // System-level search (http://hl7.org/fhir/R4/http.html#search): GET [base]?… and POST [base]/_search.
  router.get('/', async (req, res) => {
    auditAs(req, res, 'search-system', { query: true });
    sendJson(res, 200, await systemSearchBundle(deps.gate, ctxOf(res), envOf(res, deps), queryPairs(req), bundleOptions(req, res, deps, '')));
  });

  router.post('/_search', async (req, res) => {
    const form = res.locals.bodyKind === 'form' ? [...(req.body as URLSearchParams).entries()] : [];
    auditAs(req, res, 'search-system', { query: true, form });
    if (res.locals.bodyKind !== 'form' && res.locals.bodyKind !== 'none') {
      throw new FhirError('unsupported-media-type', 'POST _search takes application/x-www-form-urlencoded parameters');
    }
    sendJson(res, 200, await systemSearchBundle(deps.gate, ctxOf(res), envOf(res, deps), [...queryPairs(req), ...form], bundleOptions(req, res, deps, '')));
  });

  // System-level operations: /$op.
  router.all('/:op', async (req, res, next) => {
    if (!req.params.op.startsWith('$')) return next();
    auditAs(req, res, 'operation', { operation: req.params.op, query: true });
    await operation(req.params.op, 'system', req.method).handler(req, res, deps, {});
  });

  router.all('/', (req) => {
    throw new FhirError('method-not-allowed', `${req.method} / is not supported (GET searches every type; POST takes a batch or transaction Bundle)`, { headers: { Allow: 'GET, POST' } });
  });
  return router;
}
