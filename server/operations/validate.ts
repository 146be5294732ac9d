import type { Request, Response } from 'express';
import type { OperationOutcome, OperationOutcomeIssue, Parameters, Resource } from 'fhir/r4';
import { definitions, type ResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { FhirError } from '../errors';
import type { Gate } from '../gate/gate';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf } from '../http/request';
import { schemaValidator } from '../validation/schema';
import type { Validator } from '../validation/validate';
import type { OperationDef } from './registry';

type Mode = 'general' | 'create' | 'update' | 'delete';

/**
 * `$validate` (http://hl7.org/fhir/R4/resource-operation-validate.html): reports every issue of a
 * resource against the R4 schema, the base definitions and Custodian's profiles, without storing
 * anything. The answer is 200 with an OperationOutcome whenever validation ran, valid or not.
 *
 * It never reveals stored data: modes `update` and `delete` name an existing resource, and the
 * gate decides whether this client may know of it before anything is said about it.
 */
export async function validate(
  gate: Gate,
  validator: Validator,
  ctx: AccessContext,
  type: ResourceType,
  id: string | undefined,
  input: { resource?: unknown; mode: Mode; profile?: string },
): Promise<OperationOutcome> {
  const issues: OperationOutcomeIssue[] = [];
  if (input.profile !== undefined && input.profile !== definitions[type].profile && input.profile !== `http://hl7.org/fhir/StructureDefinition/${type}`) {
    throw new FhirError('invalid-request', `Profile ${input.profile} is not known to this server; it validates against ${definitions[type].profile}`);
  }
  if (input.mode === 'update' || input.mode === 'delete') {
    if (!id) throw new FhirError('invalid-request', `mode=${input.mode} needs an instance: POST /${type}/{id}/$validate`);
    await gate.read(ctx, type, id); // 403 / 404 / 410 exactly as a read would answer
    if (input.mode === 'delete' && !definitions[type].interactions.includes('delete')) {
      issues.push({ severity: 'error', code: 'not-supported', diagnostics: `${type} cannot be deleted (append-only)` });
    }
  }
  if (input.mode !== 'delete') {
    if (input.resource === undefined) throw new FhirError('invalid-request', 'No resource to validate: send it as the body or as the "resource" parameter');
    const report = validator.report(type, input.resource);
    issues.push(...report.base, ...report.profile, ...report.warnings);
    if (input.mode === 'update' && (input.resource as Resource).id !== id) {
      issues.push({ severity: 'error', code: 'invalid', diagnostics: `The resource id must be '${id}' for an update`, expression: [`${type}.id`] });
    }
    if (input.mode === 'update' && !definitions[type].interactions.includes('update')) {
      issues.push({ severity: 'error', code: 'not-supported', diagnostics: `${type} cannot be updated (append-only)` });
    }
  }
  if (!issues.some((i) => i.severity === 'error' || i.severity === 'fatal')) {
    issues.unshift({ severity: 'information', code: 'informational', diagnostics: `The ${type} is valid${input.mode === 'general' ? '' : ` for ${input.mode}`}` });
  }
  return { resourceType: 'OperationOutcome', issue: issues };
}

function readInput(req: Request, res: Response, type: ResourceType): { resource?: unknown; mode: Mode; profile?: string } {
  const query = req.query as Record<string, string | undefined>;
  let mode = query.mode;
  let profile = query.profile;
  let resource: unknown = req.body;
  if (res.locals.bodyKind !== 'json' && res.locals.bodyKind !== 'none') {
    throw new FhirError('unsupported-media-type', '$validate takes the resource (or Parameters) as application/fhir+json');
  }
  const body = req.body as Parameters | undefined;
  if (body && typeof body === 'object' && body.resourceType === 'Parameters' && type !== ('Parameters' as string)) {
    // The Parameters wrapper must itself be well formed before it is read ("parameter": 5 was a
    // 500); the resource inside is what is being validated, and is reported on below.
    const parameter = Array.isArray(body.parameter) ? body.parameter.map((p) => (p && typeof p === 'object' ? (({ resource: _r, ...rest }) => rest)(p) : p)) : body.parameter;
    const wrapper = schemaValidator().validate('Parameters', { ...body, parameter });
    if (wrapper.length) throw new FhirError('invalid-resource', 'The Parameters body is not valid FHIR R4', { issues: wrapper });
    resource = undefined;
    for (const p of body.parameter ?? []) {
      if (p.name === 'resource') resource = p.resource;
      else if (p.name === 'mode') mode = p.valueCode ?? p.valueString;
      else if (p.name === 'profile') profile = p.valueUri ?? p.valueCanonical ?? p.valueString;
    }
  }
  const modes: Mode[] = ['create', 'update', 'delete'];
  if (mode !== undefined && !modes.includes(mode as Mode)) throw new FhirError('invalid-request', `mode must be create, update or delete`);
  return { resource, mode: (mode as Mode | undefined) ?? 'general', profile };
}

export const validateOperation: OperationDef = {
  name: '$validate',
  definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate',
  levels: ['type', 'instance'],
  methods: ['POST'],
  types: ['Patient', 'Consent', 'AuditEvent'],
  async handler(req: Request, res: Response, deps: HttpDeps, target) {
    const type = target.type!;
    const outcome = await validate(deps.gate, deps.validator, ctxOf(res), type, target.id, readInput(req, res, type));
    sendJson(res, 200, outcome);
  },
};
