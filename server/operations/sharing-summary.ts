import type { Request, Response } from 'express';
import type { Parameters, ParametersParameter, Reference } from 'fhir/r4';
import type { AccessContext, OrganizationRef } from '../access/context';
import { custodiansOf } from '../consent/policy';
import { summarize } from '../consent/summary';
import { FhirError } from '../errors';
import type { Gate } from '../gate/gate';
import type { HttpDeps } from '../http/deps';
import { sendJson } from '../http/format';
import { ctxOf } from '../http/request';
import type { OperationDef } from './registry';

export const SHARING_SUMMARY_URL = 'https://custodian.example.org/fhir/OperationDefinition/Patient-sharing-summary';

const CUSTODIAN_PURPOSES = ['TREAT', 'ETREAT', 'BTG', 'HOPERAT'];
const v3 = (code: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code });

function orgReference(o: OrganizationRef): Reference {
  return { ...(o.reference ? { reference: o.reference } : {}), ...(o.identifier ? { identifier: { system: o.identifier.system, value: o.identifier.value } } : {}) };
}

/**
 * `GET /Patient/{id}/$sharing-summary`: "who can see my record": the custodian and what for,
 * every Consent provision that permits or denies someone (purposes, actions, limits, until when,
 * on which Consent), objections to secondary use, break-the-glass refusals, and the server's
 * default. For the custodian, auditors and the patient.
 */
export async function sharingSummary(gate: Gate, ctx: AccessContext, patientId: string, options: { defaultPolicy: 'deny' | 'permit'; now: () => number }): Promise<Parameters> {
  const { record } = await gate.reviewPatient(ctx, patientId);
  const custodians = custodiansOf(record.resource!, record.creatorOrg);
  const s = summarize(custodians, record.consents, options.now(), options.defaultPolicy);
  const parameter: ParametersParameter[] = [
    { name: 'patient', valueReference: { reference: `Patient/${patientId}` } },
    { name: 'defaultPolicy', valueCode: s.defaultPolicy },
    ...s.custodians.map((c) => ({
      name: 'custodian',
      part: [{ name: 'organization', valueReference: orgReference(c) }, ...CUSTODIAN_PURPOSES.map((p) => ({ name: 'purpose', valueCoding: v3(p) }))],
    })),
    ...s.lines.map((l) => ({
      name: 'access',
      part: [
        { name: 'effect', valueCode: l.effect },
        ...(l.actors.length ? l.actors.map((a) => ({ name: 'actor', valueReference: a })) : [{ name: 'actor', valueString: 'anyone within this Consent\'s context' }]),
        ...(l.purposes.length ? l.purposes.map((p) => ({ name: 'purpose', valueCoding: p })) : [{ name: 'purpose', valueString: 'any purpose' }]),
        ...l.actions.map((a) => ({ name: 'action', valueCode: a })),
        ...l.limits.map((x) => ({ name: 'limit', valueString: x })),
        ...(l.from ? [{ name: 'from', valueDateTime: l.from }] : []),
        ...(l.until ? [{ name: 'until', valueDateTime: l.until }] : []),
        { name: 'consent', valueReference: { reference: l.consent } },
        { name: 'provision', valueString: l.provision },
      ],
    })),
    ...s.objections.map((o) => ({
      name: 'objection',
      part: [
        { name: 'kind', valueCode: o.kind },
        { name: 'consent', valueReference: { reference: o.consent } },
        { name: 'effect', valueString: 'secondary use (HRESCH, PUBHLTH, HPAYMT, HMARKT, and HOPERAT by anyone but the custodian) is refused' },
      ],
    })),
    {
      name: 'breakTheGlass',
      valueString: s.breakGlassRefusals.length
        ? `Break-the-glass is refused where these provisions apply: ${s.breakGlassRefusals.join('; ')}`
        : 'Clients registered for BTG or ETREAT may open this record in an emergency; every such access is audited',
    },
    { name: 'nationalServices', valueString: 'Clients with the national-service role receive every Consent of this patient (not the record itself)' },
    ...s.unreadable.map((c) => ({ name: 'unreadable', valueReference: { reference: c } })),
  ];
  return { resourceType: 'Parameters', parameter };
}

export const sharingSummaryOperation: OperationDef = {
  name: '$sharing-summary',
  definition: SHARING_SUMMARY_URL,
  levels: ['instance'],
  methods: ['GET'],
  types: ['Patient'],
  async handler(_req: Request, res: Response, deps: HttpDeps, target) {
    if (target.type !== 'Patient') throw new FhirError('not-found', '$sharing-summary is defined on Patient');
    sendJson(res, 200, await sharingSummary(deps.gate, ctxOf(res), target.id!, { defaultPolicy: deps.config.consentDefault, now: deps.now }));
  },
};
