import type { Config } from '../config';

/**
 * The URLs that name this server in OAuth: the `iss` and `aud` of the access tokens it issues,
 * the audiences it accepts on bearer tokens, and the token endpoint a client assertion must be
 * addressed to (its `aud`, RFC 7523 §3; SMART Backend Services: "the FHIR authorization
 * server's token URL").
 *
 * They are fixed when the app is built and never come from a request: a client that could choose
 * them (with `Host` or `X-Forwarded-Host`) could replay here an assertion or a token it received
 * as another server's client or resource server. Links in responses (`fullUrl`, paging,
 * `Location`) are another matter: see `baseUrl` in http/pipeline.ts.
 *
 * The rule: `CUSTODIAN_BASE_URL` when set; otherwise the listen address (`http://HOST:PORT`,
 * with `localhost` for a wildcard HOST), so a first `npm start` issues tokens for
 * http://127.0.0.1:8080. `CUSTODIAN_EXTRA_BASE_URLS` adds other public names of the same server
 * whose assertions and tokens are accepted too; tokens are always issued for the first.
 */
export interface Audience {
  /** The canonical base URL: `iss` and `aud` of every access token issued here; what discovery advertises. */
  readonly issuer: string;
  /** Base URLs a bearer token may be addressed to (`aud`), the issuer first. */
  readonly accepted: readonly string[];
  /** The token endpoint discovery and the CapabilityStatement advertise. */
  readonly tokenEndpoint: string;
  /** Token endpoint URLs a client assertion's `aud` may name. */
  readonly tokenEndpoints: readonly string[];
}

export const TOKEN_PATH = '/auth/token';

/** The base URL of a listening socket, for the default audience: `http://127.0.0.1:8080`, `http://[::1]:8080`. */
export function listenBaseUrl(host: string, port: number): string {
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  const name = wildcard ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return `http://${name}:${port}`;
}

/**
 * The audience of an app: from the configuration, else from the address it listens at. Throws
 * when neither is known (fail closed: a server that cannot name itself issues no tokens).
 */
export function audienceOf(config: Pick<Config, 'baseUrl' | 'extraBaseUrls'>, listenUrl: string | undefined): Audience {
  const issuer = config.baseUrl ?? listenUrl?.replace(/\/+$/, '');
  if (!issuer) throw new Error('no base URL for tokens: set CUSTODIAN_BASE_URL or pass the listen address');
  const accepted = [...new Set([issuer, ...config.extraBaseUrls])];
  return Object.freeze({
    issuer,
    accepted: Object.freeze(accepted),
    tokenEndpoint: `${issuer}${TOKEN_PATH}`,
    tokenEndpoints: Object.freeze(accepted.map((base) => `${base}${TOKEN_PATH}`)),
  });
}
