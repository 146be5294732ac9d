import { Router, type Request, type Response } from 'express';
import { FhirError } from '../../errors';
import { assertInteraction, allowedMethods } from '../../interactions/common';
import { createResource } from '../../interactions/create';
import { conditionalDelete, deleteResource } from '../../interactions/delete';
import { patchResource } from '../../interactions/patch';
import { historyBundle } from '../../interactions/reads';
import { searchBundle } from '../../interactions/search';
import { conditionalUpdate, updateResource } from '../../interactions/update';
import { auditAs } from '../../audit/hold';
import { operation } from '../../operations/registry';
import { bundleOptions, envOf, type HttpDeps } from '../deps';
import { sendJson } from '../format';
import { ctxOf, logicalId, parseETag, queryPairs, resourceType, versionId } from '../request';
import { sendVersion, sendWrite } from '../respond';

/**
 * Type- and instance-level interactions (http://hl7.org/fhir/R4/http.html): thin handlers that
 * parse the request, run the interaction through the gate and send its result.
 */
export function resourceRoutes(deps: HttpDeps): Router {
  const router = Router();
  const queryString = (req: Request) => {
    const i = req.originalUrl.indexOf('?');
    return i < 0 ? '' : req.originalUrl.slice(i + 1);
  };
  const ifMatch = (req: Request) => parseETag(req.get('if-match'), 'If-Match');

  const search = async (req: Request, res: Response, pairs: [string, string][]) => {
    const type = resourceType(req.params.type);
    assertInteraction(type, 'search-type');
    const bundle = await searchBundle(deps.gate, ctxOf(res), envOf(res, deps), type, pairs, bundleOptions(req, res, deps, type));
    sendJson(res, 200, bundle);
  };

  router.get('/:type', (req, res) => {
    auditAs(req, res, 'search-type', { query: true });
    return search(req, res, queryPairs(req));
  });

  router.post('/:type', async (req, res) => {
    const ifNoneExist = req.get('if-none-exist');
    // A conditional create searches first: its events record the criteria (recordQuery).
    auditAs(req, res, 'create', ifNoneExist !== undefined ? { query: true, ifNoneExist } : {});
    const type = resourceType(req.params.type);
    if (req.originalUrl.includes('?') && queryPairs(req).some(([k]) => k !== '_format' && k !== '_pretty')) {
      throw new FhirError('invalid-request', 'Create takes no search parameters; use the If-None-Exist header for a conditional create');
    }
    const result = await deps.gate.transaction(ctxOf(res), (tx) => createResource(tx, envOf(res, deps), type, req.body, ifNoneExist), {
      readsAuditIndex: type === 'AuditEvent' && ifNoneExist !== undefined,
    });
    sendWrite(req, res, result);
  });

  router.put('/:type', async (req, res) => {
    auditAs(req, res, 'update', { query: true });
    const type = resourceType(req.params.type);
    const result = await deps.gate.transaction(ctxOf(res), (tx) => conditionalUpdate(tx, envOf(res, deps), type, queryString(req), req.body, ifMatch(req)));
    sendWrite(req, res, result);
  });

  router.delete('/:type', async (req, res) => {
    auditAs(req, res, 'delete', { query: true });
    const type = resourceType(req.params.type);
    const result = await deps.gate.transaction(ctxOf(res), (tx) => conditionalDelete(tx, envOf(res, deps), type, queryString(req)));
    sendWrite(req, res, result);
  });

  router.post('/:type/_search', async (req, res) => {
    const form = res.locals.bodyKind === 'form' ? [...(req.body as URLSearchParams).entries()] : [];
    auditAs(req, res, 'search-type', { query: true, form });
    if (res.locals.bodyKind !== 'form' && res.locals.bodyKind !== 'none') {
      throw new FhirError('unsupported-media-type', 'POST _search takes application/x-www-form-urlencoded parameters');
    }
    await search(req, res, [...queryPairs(req), ...form]);
  });

  router.get('/:type/_history', async (req, res) => {
    auditAs(req, res, 'history-type', { query: true });
    const type = resourceType(req.params.type);
    assertInteraction(type, 'history-type');
    sendJson(res, 200, await historyBundle(deps.gate, ctxOf(res), envOf(res, deps), { type }, queryPairs(req), bundleOptions(req, res, deps, `${type}/_history`)));
  });

  router.get('/:type/:id/_history', async (req, res) => {
    auditAs(req, res, 'history-instance', { query: true });
    const type = resourceType(req.params.type);
    assertInteraction(type, 'history-instance');
    const id = logicalId(req.params.id);
    sendJson(res, 200, await historyBundle(deps.gate, ctxOf(res), envOf(res, deps), { type, id }, queryPairs(req), bundleOptions(req, res, deps, `${type}/${id}/_history`)));
  });

  router.get('/:type/:id/_history/:vid', async (req, res) => {
    auditAs(req, res, 'vread');
    const type = resourceType(req.params.type);
    assertInteraction(type, 'vread');
    sendVersion(req, res, await deps.gate.vread(ctxOf(res), type, logicalId(req.params.id), versionId(req.params.vid)));
  });

  // Operations share the URL shape of reads: /Type/$op and /Type/id/$op.
  router.all('/:type/:id/:op', async (req, res, next) => {
    if (!req.params.op.startsWith('$')) return next();
    auditAs(req, res, 'operation', { operation: req.params.op, query: true });
    const type = resourceType(req.params.type);
    await operation(req.params.op, 'instance', req.method, type).handler(req, res, deps, { type, id: logicalId(req.params.id) });
  });

  router.all('/:type/:id', async (req, res, next) => {
    if (!req.params.id.startsWith('$')) return next();
    auditAs(req, res, 'operation', { operation: req.params.id, query: true });
    const type = resourceType(req.params.type);
    await operation(req.params.id, 'type', req.method, type).handler(req, res, deps, { type });
  });

  router.get('/:type/:id', async (req, res) => {
    auditAs(req, res, 'read');
    const type = resourceType(req.params.type);
    assertInteraction(type, 'read');
    sendVersion(req, res, await deps.gate.read(ctxOf(res), type, logicalId(req.params.id)));
  });

  router.put('/:type/:id', async (req, res) => {
    auditAs(req, res, 'update');
    const type = resourceType(req.params.type);
    const id = logicalId(req.params.id);
    const result = await deps.gate.transaction(ctxOf(res), (tx) => updateResource(tx, envOf(res, deps), type, id, req.body, ifMatch(req)));
    sendWrite(req, res, result);
  });

  router.patch('/:type/:id', async (req, res) => {
    auditAs(req, res, 'patch');
    const type = resourceType(req.params.type);
    const id = logicalId(req.params.id);
    if (res.locals.bodyKind !== 'json-patch') {
      assertInteraction(type, 'patch');
      throw new FhirError('unsupported-media-type', 'PATCH takes a JSON Patch document (Content-Type: application/json-patch+json)');
    }
    const result = await deps.gate.transaction(ctxOf(res), (tx) => patchResource(tx, envOf(res, deps), type, id, req.body, ifMatch(req)));
    sendWrite(req, res, result);
  });

  router.delete('/:type/:id', async (req, res) => {
    auditAs(req, res, 'delete');
    const type = resourceType(req.params.type);
    const id = logicalId(req.params.id);
    const result = await deps.gate.transaction(ctxOf(res), (tx) => deleteResource(tx, envOf(res, deps), type, id, ifMatch(req)));
    sendWrite(req, res, result);
  });

  // Anything else on a type or instance URL: the method is not supported there.
  router.all('/:type', (req) => {
    const type = resourceType(req.params.type);
    throw new FhirError('method-not-allowed', `${req.method} is not supported on /${type}`, { headers: { Allow: allowedMethods(type, 'type') } });
  });
  router.all('/:type/:id', (req) => {
    const type = resourceType(req.params.type);
    throw new FhirError('method-not-allowed', `${req.method} is not supported on /${type}/${req.params.id}`, { headers: { Allow: allowedMethods(type, 'instance') } });
  });
  return router;
}
