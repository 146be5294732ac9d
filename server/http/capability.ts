import type { CapabilityStatement, CapabilityStatementRestResource } from 'fhir/r4';
import { definitions, RESOURCE_TYPES } from '../../resources';
import { OPERATIONS } from '../operations/registry';
import { searchParams } from '../search/parameters';

export const SOFTWARE_VERSION = '0.1.0';

/**
 * The CapabilityStatement (http://hl7.org/fhir/R4/capabilitystatement.html), built from the same
 * tables the server runs on (resource definitions, search parameter registry, operation
 * registry), so it lists exactly what is implemented. Tests exercise every entry.
 */
export const CONSENT_DEFAULT_EXTENSION = 'https://custodian.example.org/fhir/StructureDefinition/consent-default-policy';

/**
 * `_include` values for a type: `Type:param` for each reference parameter, and `Type:param:Target`
 * for each stored target type it can point at (http://hl7.org/fhir/R4/search.html#include).
 */
function includesFrom(type: (typeof RESOURCE_TYPES)[number]): string[] {
  return [...searchParams(type).values()]
    .filter((p) => p.type === 'reference' && RESOURCE_TYPES.some((t) => p.targets.includes(t)))
    .flatMap((p) => [`${type}:${p.code}`, ...RESOURCE_TYPES.filter((t) => p.targets.includes(t)).map((t) => `${type}:${p.code}:${t}`)]);
}

/** Subscriptions (R4, rest-hook) to Consent changes: each client manages its own (http/routes/subscriptions.ts). */
const SUBSCRIPTION: CapabilityStatementRestResource = {
  type: 'Subscription',
  documentation:
    'rest-hook Subscriptions to Consent changes: criteria Consent? with token parameters only; channel.endpoint on the server\'s allow-list; payload none or application/fhir+json. A client sees and manages only its own Subscriptions, and needs the scope to search Consent.',
  interaction: ['read', 'update', 'delete', 'create', 'search-type'].map((code) => ({ code: code as 'read' })),
  versioning: 'versioned',
  readHistory: false,
  updateCreate: false,
  conditionalCreate: false,
  conditionalRead: 'not-supported',
  conditionalUpdate: false,
  conditionalDelete: 'not-supported',
  searchParam: [
    { name: '_id', definition: 'http://hl7.org/fhir/SearchParameter/Resource-id', type: 'token' },
    { name: 'status', definition: 'http://hl7.org/fhir/SearchParameter/Subscription-status', type: 'token' },
  ],
};

export function capabilityStatement(baseUrl: string, tokenEndpoint: string, now: number, consentDefault: 'deny' | 'permit'): CapabilityStatement {
  const resources: CapabilityStatementRestResource[] = RESOURCE_TYPES.map((type) => {
    const def = definitions[type];
    const can = (i: string) => def.interactions.includes(i as never);
    return {
      type,
      profile: def.profile,
      interaction: def.interactions.map((code) => ({ code })),
      versioning: 'versioned-update',
      readHistory: true,
      updateCreate: can('update'),
      conditionalCreate: true,
      // If-None-Match and If-Modified-Since both answer 304 on read and vread (http/respond.ts).
      conditionalRead: 'full-support',
      conditionalUpdate: can('update'),
      conditionalDelete: can('delete') ? 'single' : 'not-supported',
      referencePolicy: ['literal', 'logical'],
      searchParam: [...searchParams(type).values()].map((p) => ({ name: p.code, definition: p.url, type: p.type, documentation: p.description })),
      searchInclude: ['*', ...includesFrom(type)],
      searchRevInclude: RESOURCE_TYPES.flatMap((source) => includesFrom(source).filter((i) => i.endsWith(`:${type}`)).map((i) => i.slice(0, -type.length - 1))),
      operation: OPERATIONS.filter((o) => o.types.includes(type) && o.levels.some((l) => l !== 'system')).map((o) => ({ name: o.name.slice(1), definition: o.definition })),
    };
  });
  resources.push(SUBSCRIPTION);
  const systemOperations = OPERATIONS.filter((o) => o.levels.includes('system')).map((o) => ({ name: o.name.slice(1), definition: o.definition }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date(now).toISOString(),
    publisher: 'Custodian',
    kind: 'instance',
    software: { name: 'Custodian', version: SOFTWARE_VERSION },
    implementation: { description: 'Custodian FHIR R4 server: Patient, Consent and AuditEvent', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        security: {
          cors: false,
          service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
          extension: [
            {
              url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
              extension: [{ url: 'token', valueUri: tokenEndpoint }],
            },
            // What happens when no Consent of the patient applies: deny (opt-in model) or permit (opt-out model).
            { url: CONSENT_DEFAULT_EXTENSION, valueCode: consentDefault },
          ],
          description:
            `SMART Backend Services (client_credentials with a private_key_jwt assertion, RS384 or ES384). Every route but /metadata, /.well-known/smart-configuration, /.well-known/jwks.json, /auth/token and /healthz needs a bearer token; scopes (SMART v1 and v2) are enforced per interaction. Every read is decided by the patient's Consents: the custodian organisation sees its own patients' data for direct care and its own operations; everyone else is ${consentDefault === 'deny' ? 'denied unless an active Consent of the patient permits them (deny by default)' : 'permitted unless an active Consent of the patient denies them (permit by default)'}; national data opt-outs and Type 1 objections refuse secondary use.`,
        },
        resource: resources,
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }, { code: 'history-system' }],
        // System search takes the parameters all three types share (and _type).
        searchParam: [...searchParams('Patient').values()]
          .filter((p) => RESOURCE_TYPES.every((t) => searchParams(t).has(p.code)))
          .map((p) => ({ name: p.code, definition: p.url, type: p.type, documentation: p.description })),
        ...(systemOperations.length ? { operation: systemOperations } : {}),
      },
    ],
  };
}
