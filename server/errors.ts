import type { OperationOutcome, OperationOutcomeIssue } from 'fhir/r4';

/**
 * The error catalogue: every failure the server reports has one stable code here, and this
 * table alone decides its HTTP status and OperationOutcome issue type.
 *
 * The README's "Errors" table is checked against this object by a test, so the two cannot drift.
 * Issue types come from http://hl7.org/fhir/R4/valueset-issue-type.html.
 */
export const ERRORS = {
  'invalid-json': { status: 400, issue: 'structure', title: 'The body is not well-formed JSON' },
  'invalid-resource': { status: 400, issue: 'structure', title: 'The resource breaks the base FHIR R4 rules (schema, cardinality, invariants, narrative, ids)' },
  'invalid-request': { status: 400, issue: 'invalid', title: 'The request is malformed (parameters, headers, URL, Bundle structure)' },
  'id-mismatch': { status: 400, issue: 'invalid', title: 'The id in the body does not match the id in the URL' },
  'invalid-search': { status: 400, issue: 'invalid', title: 'A search or history parameter is unknown (strict handling) or malformed' },
  'unauthenticated': { status: 401, issue: 'login', title: 'No valid bearer token was presented' },
  'forbidden': { status: 403, issue: 'forbidden', title: 'The request is not permitted for this client' },
  'unknown-type': { status: 404, issue: 'not-supported', title: 'The resource type is not served here' },
  'not-found': { status: 404, issue: 'not-found', title: 'The resource, version or route does not exist' },
  'method-not-allowed': { status: 405, issue: 'not-supported', title: 'The interaction is not supported for this resource type' },
  'not-acceptable': { status: 406, issue: 'not-supported', title: 'Only application/fhir+json and application/json are produced' },
  'conflict': { status: 409, issue: 'conflict', title: 'The request conflicts with the current state of the resource' },
  'gone': { status: 410, issue: 'deleted', title: 'The resource has been deleted' },
  'precondition-failed': { status: 412, issue: 'conflict', title: 'A precondition (If-Match, conditional match count) failed' },
  'payload-too-large': { status: 413, issue: 'too-long', title: 'The request body or Bundle is larger than the configured limit' },
  'unsupported-media-type': { status: 415, issue: 'not-supported', title: 'The request body has a content type the server does not accept' },
  'unprocessable': { status: 422, issue: 'processing', title: 'The resource breaks a Custodian profile or business rule' },
  'internal': { status: 500, issue: 'exception', title: 'Unexpected server error (details are in the server log under the request id)' },
  'unavailable': { status: 503, issue: 'transient', title: 'A dependency (database, audit store) is unavailable; no data was returned' },
} as const satisfies Record<string, { status: number; issue: OperationOutcomeIssue['code']; title: string }>;

export type ErrorCode = keyof typeof ERRORS;

export interface FhirErrorOptions {
  /** Extra or more precise issues; when given they replace the single default issue. */
  readonly issues?: readonly OperationOutcomeIssue[];
  /** FHIRPath expressions locating the problem, for the default issue. */
  readonly expression?: readonly string[];
  /** Response headers the mapping adds (Allow on 405, WWW-Authenticate on 401, ...). */
  readonly headers?: Readonly<Record<string, string>>;
  readonly cause?: unknown;
}

/** A failure with a catalogue code; thrown anywhere, rendered once by the HTTP error mapper. */
export class FhirError extends Error {
  readonly code: ErrorCode;
  readonly options: FhirErrorOptions;
  constructor(code: ErrorCode, message: string, options: FhirErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FhirError';
    this.code = code;
    this.options = options;
  }
  get status(): number {
    return ERRORS[this.code].status;
  }
}

/** The OperationOutcome for an error, with its issues as the client will see them. */
export function outcomeOf(err: FhirError): OperationOutcome {
  const issues: OperationOutcomeIssue[] = err.options.issues?.length
    ? [...err.options.issues]
    : [
        {
          severity: 'error',
          code: ERRORS[err.code].issue,
          diagnostics: err.message,
          ...(err.options.expression?.length ? { expression: [...err.options.expression] } : {}),
        },
      ];
  return { resourceType: 'OperationOutcome', issue: issues };
}

/** An informational OperationOutcome (Prefer: return=OperationOutcome, successful deletes). */
export function informational(message: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: message }] };
}
