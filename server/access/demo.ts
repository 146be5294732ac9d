import fs from 'node:fs';
import path from 'node:path';
import { ODS_SYSTEM } from './context';
import { generateJwkPair } from './keys';

/**
 * The newcomer path: on a first start without a client registry, create one with three demo
 * clients (a GP practice, a hospital, a national service), write their private keys under
 * `<dataDir>/keys/`, and say how to get a token.
 */
const DEMO = [
  {
    client_id: 'demo-gp',
    name: 'Demo GP practice (Riverside Surgery)',
    organization: { identifier: { system: ODS_SYSTEM, value: 'A99001' }, display: 'Riverside Surgery' },
    scopes: ['system/Patient.cruds', 'system/Consent.cruds', 'system/AuditEvent.rs'],
    purposes: ['TREAT', 'ETREAT', 'HOPERAT', 'PATRQT'],
  },
  {
    client_id: 'demo-hospital',
    name: 'Demo hospital (St Elsewhere NHS Trust)',
    organization: { identifier: { system: ODS_SYSTEM, value: 'R9D' }, display: 'St Elsewhere NHS Trust' },
    scopes: ['system/Patient.rs', 'system/Consent.rs', 'system/AuditEvent.c'],
    purposes: ['TREAT', 'ETREAT', 'BTG', 'HOPERAT'],
  },
  {
    client_id: 'demo-national',
    name: 'Demo national service (consent feed)',
    organization: { identifier: { system: ODS_SYSTEM, value: 'X26' }, display: 'NHS England' },
    scopes: ['system/Consent.rs', 'system/Patient.s'],
    purposes: ['HOPERAT', 'PUBHLTH'],
    roles: ['national-service'],
  },
];

export async function createDemoRegistry(clientsFile: string, keysDir: string): Promise<string[]> {
  fs.mkdirSync(keysDir, { recursive: true, mode: 0o700 });
  const clients = [];
  for (const demo of DEMO) {
    const { privateJwk, publicJwk } = await generateJwkPair();
    const keyFile = path.join(keysDir, `${demo.client_id}.private.jwk.json`);
    fs.writeFileSync(keyFile, JSON.stringify({ client_id: demo.client_id, ...privateJwk }, null, 2) + '\n', { mode: 0o600 });
    clients.push({ ...demo, jwks: { keys: [publicJwk] } });
  }
  fs.mkdirSync(path.dirname(clientsFile), { recursive: true });
  fs.writeFileSync(clientsFile, JSON.stringify(clients, null, 2) + '\n', { flag: 'wx' });
  return [
    `No client registry was found, so ${clientsFile} was created with three demo clients:`,
    ...DEMO.map((d) => `  ${d.client_id.padEnd(14)} ${d.name}; scopes ${d.scopes.join(' ')}; purposes ${d.purposes.join(', ')}`),
    `Their private keys are in ${keysDir}. Get a token with:`,
    `  npm run token -- --client demo-gp`,
    `and call the API with it:`,
    `  curl -H "Authorization: Bearer $(npm run -s token -- --client demo-gp)" http://127.0.0.1:8080/Patient`,
  ];
}
