import type { Request, Response } from 'express';
import type { Parameters, ParametersParameter } from 'fhir/r4';
import { isResourceType } from '../../resources';
import type { AccessContext } from '../access/context';
import { parsePurpose } from '../access/purpose';
import type { ClientRegistry } from '../access/registry';
import { bearerPatient, scopesFor } from '../access/scopes';
import { decide } from '../consent/decide';
import { RULES, type Decision } from '../consent/decision';
import { engineRequest } from '../consent/policy';
import type { ConsentAction } from '../consent/request';
import { FhirError } from '../errors';
import type { Gate } from '../gate/gate';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf } from '../http/request';
import type { OperationDef } from './registry';

export const ACCESS_DECISION_URL = 'https://custodian.example.org/fhir/OperationDefinition/Patient-access-decision';

export interface AccessQuestion {
  readonly client: string;
  readonly purpose: string;
  /** `Type/id` of the patient's data to ask about (default: the Patient). */
  readonly resource?: string;
  readonly action: ConsentAction;
}

/**
 * `GET /Patient/{id}/$access-decision?client=…&purpose=…[&resource=Type/id][&action=access|disclose]`:
 * what the server would decide if that registered client asked for that data for that purpose,
 * with the reason, the Consent(s) and provision that decided, and the rule applied. For the
 * patient's custodian, auditors and the patient; it never returns the data itself.
 */
export async function accessDecision(gate: Gate, registry: ClientRegistry, ctx: AccessContext, patientId: string, q: AccessQuestion, options: { defaultPolicy: 'deny' | 'permit'; now: () => number }): Promise<Parameters> {
  const { record, resource } = await gate.reviewPatient(ctx, patientId);
  // A client id the registry does not hold is asked about as a client with no organisation, role
  // or scope (what such a client would get: its token would be refused first), never answered
  // differently: a reviewer, a patient's app among them, must not be able to list the registry.
  const registered = registry.get(q.client);
  const client = registered ?? { clientId: q.client, organization: undefined, roles: [], scopes: [] as readonly string[] };
  const purpose = parsePurpose(q.purpose);
  if (!purpose) throw new FhirError('invalid-request', `purpose ${q.purpose} is not a v3-ActReason code`, { expression: ['purpose'] });
  const target = q.resource ?? `Patient/${patientId}`;
  const m = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(target);
  if (!m || !isResourceType(m[1])) throw new FhirError('invalid-request', `resource must be Type/id of Patient, Consent or AuditEvent`, { expression: ['resource'] });
  const type = m[1];
  const version = await resource(type, m[2]);
  if (!version) throw new FhirError('not-found', `${target} is not part of the record of Patient/${patientId}`);
  const actor = { clientId: client.clientId, organization: client.organization, roles: client.roles };
  const decision: Decision = decide(engineRequest(actor, purpose, version, new Map([[patientId, record]]), q.action, options));
  const params: ParametersParameter[] = [
    { name: 'decision', valueCode: decision.effect },
    { name: 'reason', valueCode: decision.reason },
    { name: 'rule', valueString: RULES[decision.reason] },
    { name: 'detail', valueString: decision.detail },
    ...decision.consents.map((c) => ({ name: 'consent', valueReference: { reference: c } })),
    ...(decision.provision ? [{ name: 'provision', valueString: decision.provision }] : []),
    { name: 'client', valueString: client.clientId },
    { name: 'purpose', valueCoding: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: purpose } },
    { name: 'resource', valueReference: { reference: target } },
    { name: 'action', valueCode: q.action },
    // Scopes are a separate gate: say whether the client's registration would even let it ask.
    // Not to the patient: whether a client id has scopes tells whether it is registered at all.
    ...(bearerPatient(ctx) === undefined ? [{ name: 'scopesAllow', valueBoolean: scopesFor(client.scopes, type, 'r').length > 0 || scopesFor(client.scopes, type, 's').length > 0 }] : []),
  ];
  return { resourceType: 'Parameters', parameter: params };
}

export const accessDecisionOperation: OperationDef = {
  name: '$access-decision',
  definition: ACCESS_DECISION_URL,
  levels: ['instance'],
  methods: ['GET'],
  types: ['Patient'],
  async handler(req: Request, res: Response, deps: HttpDeps, target) {
    if (target.type !== 'Patient') throw new FhirError('not-found', '$access-decision is defined on Patient');
    const q = req.query as Record<string, string | undefined>;
    if (!q.client || typeof q.client !== 'string') throw new FhirError('invalid-request', 'client is required, once (a registered client_id)', { expression: ['client'] });
    for (const k of ['purpose', 'resource', 'action'] as const) if (q[k] !== undefined && typeof q[k] !== 'string') throw new FhirError('invalid-request', `${k} may be given once`, { expression: [k] });
    const action = (q.action ?? 'access') as ConsentAction;
    if (!['access', 'disclose', 'correct', 'use', 'collect'].includes(action)) throw new FhirError('invalid-request', 'action must be a consentaction code', { expression: ['action'] });
    const result = await accessDecision(deps.gate, deps.registry, ctxOf(res), target.id!, { client: q.client, purpose: q.purpose ?? 'TREAT', resource: q.resource, action }, {
      defaultPolicy: deps.config.consentDefault,
      now: deps.now,
    });
    sendJson(res, 200, result);
  },
};
