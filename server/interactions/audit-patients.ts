import type { AuditEvent, Coding, Reference } from 'fhir/r4';
import { standsForPatient } from '../../resources/audit-event';
import type { GatedTx } from '../gate/gate';
import { FhirError } from '../errors';
import { conditionalFilter, type InteractionEnv } from './common';

/** How many distinct patient identifiers one event may need looked up (each a query in the write transaction). */
const MAX_IDENTIFIERS = 20;
/**
 * And one transaction, whatever its events: a transaction Bundle of a thousand events holds the
 * writer (which every audited response waits for) through all of their lookups, twenty thousand
 * at twenty an event. A batch runs each entry in a transaction of its own.
 */
const MAX_TRANSACTION_IDENTIFIERS = 100;

/**
 * How many lookups each write transaction has made. Not their answers: a later entry of a
 * transaction Bundle may create the Patient an earlier one did not find.
 */
const lookups = new WeakMap<GatedTx, number>();

/**
 * Puts a client's AuditEvent (an audit source recording its own accesses) on the trails of the
 * patients it is about. The server knows an event's patients by its `Patient/{id}` references
 * (resources/audit-event.ts, the rule of the R4 `patient` search parameter); an EHR that knows a
 * patient by NHS number only, or writes this server's full URL, would otherwise record an access
 * that no patient's `$access-report` shows. Before the event is stored, each agent `who` and
 * entity `what` that stands for a patient:
 * - as an absolute URL on this server, is made relative (as HAPI FHIR treats its own base URLs
 *   as local);
 * - by identifier only (system and value), gets the reference of the one current Patient with
 *   that identifier, whoever may see it, the identifier kept; none or several leave it as it is.
 *
 * `byIdentifier` says the event named a patient by identifier only: such an event is answered
 * without its body (see WriteResult.withheld), found or not, and reading it back is refused to
 * the source found or not (namesPatientByIdentifier), so that neither tells the client whether
 * this server holds a patient it may not be able to find by search.
 */
export async function placeOnPatientTrails(tx: GatedTx, env: InteractionEnv, event: AuditEvent): Promise<{ event: AuditEvent; byIdentifier: boolean }> {
  let byIdentifier = false;
  // Each identifier is looked up once, inside the write transaction (which holds the writer).
  const looked = new Map<string, Promise<string[]>>();
  const place = async (ref: Reference | undefined, role?: Coding): Promise<Reference | undefined> => {
    if (!ref) return ref;
    const local = `${env.baseUrl}/Patient/`;
    if (ref.reference?.startsWith(local)) return { ...ref, reference: ref.reference.slice(env.baseUrl.length + 1) };
    if (ref.reference !== undefined || !standsForPatient(ref, role)) return ref;
    const { system, value } = ref.identifier ?? {};
    if (!system || !value) return ref;
    byIdentifier = true;
    // No Patient's identifier holds a control character (search criteria may not either).
    if (/[\u0000-\u001F\u007F]/.test(system + value)) return ref;
    const escape = (s: string) => s.replace(/[\\,|$]/g, (c) => `\\${c}`);
    const token = `${escape(system)}|${escape(value)}`;
    const expression = ['AuditEvent.agent.who.identifier', 'AuditEvent.entity.what.identifier'];
    if (!looked.has(token) && looked.size >= MAX_IDENTIFIERS) {
      throw new FhirError('unprocessable', `An AuditEvent may name at most ${MAX_IDENTIFIERS} patients by identifier only: reference them as Patient/{id}, or record one event per patient (as IHE BALP does)`, { expression });
    }
    if (!looked.has(token)) {
      const made = lookups.get(tx) ?? 0;
      if (made >= MAX_TRANSACTION_IDENTIFIERS) {
        throw new FhirError('unprocessable', `The AuditEvents of one transaction may name at most ${MAX_TRANSACTION_IDENTIFIERS} patients by identifier only (each event's distinct ones counted): reference them as Patient/{id}, or send them in a batch, whose entries are transactions of their own`, { expression });
      }
      lookups.set(tx, made + 1);
      looked.set(token, tx.patientIdsMatching(conditionalFilter('Patient', `identifier=${encodeURIComponent(token)}`, env)));
    }
    const ids = await looked.get(token)!;
    return ids.length === 1 ? { ...ref, reference: `Patient/${ids[0]}` } : ref;
  };
  // One after another: the lookups share the write transaction's connection.
  const agent: AuditEvent['agent'] = [];
  for (const a of event.agent ?? []) agent.push(a.who ? { ...a, who: await place(a.who) } : a);
  if (!event.entity) return { event: { ...event, agent }, byIdentifier };
  const entity: NonNullable<AuditEvent['entity']> = [];
  for (const e of event.entity) entity.push(e.what ? { ...e, what: await place(e.what, e.role) } : e);
  return { event: { ...event, agent, entity }, byIdentifier };
}
