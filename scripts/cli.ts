import fs from 'node:fs';
import path from 'node:path';
import type { JWK } from 'jose';

/** What the command-line scripts share: `--name value` / `--name=value` arguments and the client's key file. */

export function parseArgs(argv: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`unexpected argument ${argv[i]}`);
    out[m[1]] = m[2] ?? argv[++i] ?? '';
  }
  return out;
}

/** The data directory (`--data-dir`, CUSTODIAN_DATA_DIR, ./data) and the client's private JWK (`--key`, or `<data dir>/keys/<client>.private.jwk.json`). */
export function clientKey(a: Record<string, string>, clientId: string): { dataDir: string; privateJwk: JWK } {
  const dataDir = path.resolve(a['data-dir'] ?? process.env.CUSTODIAN_DATA_DIR ?? './data');
  const keyFile = a.key ?? path.join(dataDir, 'keys', `${clientId}.private.jwk.json`);
  const { client_id: _c, ...privateJwk } = JSON.parse(fs.readFileSync(keyFile, 'utf8')) as JWK & { client_id?: string };
  return { dataDir, privateJwk };
}
