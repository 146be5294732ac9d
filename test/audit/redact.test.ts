import assert from 'node:assert/strict';
import { FAILURE_FOR_AUDITORS, requestLine, shownOutcome, WITHHELD_FOR_AUDITORS } from '../../server/audit/redact';

/**
 * The outcome text a custodian or patient gets of an event (audit/redact.ts). A refused
 * transaction's text is on the event of every patient it touched, and may quote an entry about
 * another patient by identifier, which no `Patient/<id>` check can see (found by a second reading).
 */
describe('Audit: what of an event is the whole request\'s', () => {
  it('a refusal\'s own decision text is shown; one quoting a request or naming another patient is withheld; a failure\'s never shown', () => {
    const refused = (outcomeDesc: string) => shownOutcome({ outcome: '8', outcomeDesc }, ['a']);
    assert.equal(refused('consent-deny: an active Consent of Patient/a denies TREAT access'), 'consent-deny: an active Consent of Patient/a denies TREAT access');
    assert.equal(refused('Entry 3 (PUT Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919): Not permitted'), WITHHELD_FOR_AUDITORS);
    assert.equal(refused('forbidden: GET Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919'), WITHHELD_FOR_AUDITORS);
    assert.equal(refused('Not permitted: access to Patient/b'), WITHHELD_FOR_AUDITORS);
    assert.equal(shownOutcome({ outcome: '4', outcomeDesc: 'Patient/a: bad request' }, ['a']), FAILURE_FOR_AUDITORS);
    assert.equal(shownOutcome({ outcome: '0', outcomeDesc: 'Successful Disclosure' }, ['a']), 'Successful Disclosure');
    assert.equal(shownOutcome({ outcome: '0' }, ['a']), undefined);
  });

  it('a query is shown as its request line, without the query string and the header lines', () => {
    assert.equal(requestLine('GET https://h/fhir/Patient?identifier=x|1\nAccept: */*\nX-Request-Id: r'), 'GET https://h/fhir/Patient');
    assert.equal(requestLine('POST https://h/fhir/\nAccept: */*\nBundle.entry[0]: GET Patient?identifier=x|1'), 'POST https://h/fhir/');
  });
});
