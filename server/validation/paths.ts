/**
 * A JSON pointer into a resource (`/name/0/given/1`) as the FHIRPath expression
 * OperationOutcome.issue.expression expects (`Patient.name[0].given[1]`).
 */
export function pathExpression(type: string, pointer: string): string {
  let out = type;
  if (!pointer) return out;
  for (const raw of pointer.split('/').slice(1)) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(segment) ? `[${segment}]` : `.${segment}`;
  }
  return out;
}
