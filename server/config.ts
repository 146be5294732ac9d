import { isIP } from 'node:net';
import path from 'node:path';
import express from 'express';

/**
 * Everything the server reads from its environment, checked once at start-up.
 *
 * Factories receive this object; nothing else reads `process.env`, so tests can build as many
 * differently configured apps as they like in one process.
 */
export interface Config {
  readonly port: number;
  readonly host: string;
  /**
   * Public base URL (no trailing slash). It names the server in access tokens (`iss`, `aud`) and
   * client assertions (`aud` = its token endpoint), and is used in links. When absent, tokens use
   * the listen address (see access/audience.ts) and links are built per request from Host /
   * X-Forwarded-* headers.
   */
  readonly baseUrl: string | undefined;
  /**
   * The reverse proxies whose `X-Forwarded-For` names the client's address in the audit trail:
   * addresses, CIDR ranges or `loopback`, `linklocal`, `uniquelocal`. None by default: the address
   * is the connection's peer.
   */
  readonly trustProxy: readonly string[];
  /**
   * Other public base URLs of this same server (CUSTODIAN_EXTRA_BASE_URLS): client assertions
   * addressed to their token endpoint and access tokens addressed to them are accepted too.
   */
  readonly extraBaseUrls: readonly string[];
  readonly dataDir: string;
  readonly database: DatabaseConfig;
  /** Largest accepted request body, in bytes. */
  readonly maxBodyBytes: number;
  /** Largest accepted batch/transaction Bundle, in entries. */
  readonly maxBundleEntries: number;
  readonly search: { readonly defaultCount: number; readonly maxCount: number };
  readonly logLevel: LogLevel;
  readonly auth: AuthConfig;
  /** The answer when no Consent applies: deny (opt-in model, the default) or permit (opt-out model). */
  readonly consentDefault: 'deny' | 'permit';
  /**
   * Bench-only: run without writing the audit trail, to measure what auditing costs
   * (CUSTODIAN_BENCH_UNAUDITED=1). Never in service: every access must be audited.
   */
  readonly benchUnaudited: boolean;
  /**
   * Bench-only, SQLite only (CUSTODIAN_BENCH_AUDIT_FLOOR): requests commit, through the audit
   * worker's group commit and its fsync, not their AuditEvents but `row`, one 8-byte row each
   * (what being durable before the response costs by itself), or `journal`, their events built,
   * serialised and hash-chained into one table of their own (what storing them whole, with
   * everything else deferred, would cost). For the benchmark to set beside the real trail.
   * Never in service: the trail gets no AuditEvent.
   */
  readonly benchAuditFloor: 'row' | 'journal' | undefined;
  /** The national consent feed: bulk exports, subscriptions and the workers behind them. */
  readonly feed: FeedConfig;
  /** How often the audit chain's head is written to the log when it has moved, seconds (0: at start and shutdown only). */
  readonly auditHeadLogSeconds: number;
}

export interface FeedConfig {
  /**
   * Where Subscription endpoints may point: http(s) origins, each with an optional path prefix.
   * Empty (the default): no Subscription can be created.
   */
  readonly subscriptionEndpoints: readonly URL[];
  /** How long one notification POST may take, ms. */
  readonly deliveryTimeoutMs: number;
  /** The delay after a failed delivery, ms; it doubles with each further failure up to `retryMaxMs`. */
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** Consecutive failed deliveries after which a Subscription shows status `error`. */
  readonly errorAfter: number;
  /** How often the workers look for work other processes queued (exports, notifications), ms. */
  readonly pollMs: number;
  /**
   * How long a process holds an export or a Subscription's queue without a sign of life, ms: after
   * a crash, another process (or the restarted one) takes the work over once this has passed.
   */
  readonly leaseMs: number;
  /** Resources per export output file; each file is written and audited in one transaction. */
  readonly exportFileResources: number;
  /** How long the files of a completed export are kept, seconds. */
  readonly exportRetentionSeconds: number;
}

export interface AuthConfig {
  /** The client registry file (JSON array of clients). */
  readonly clientsFile: string;
  /** The server's token-signing key (private JWK); generated under the data dir when absent. */
  readonly signingKeyFile: string;
  /** Access token lifetime, seconds. */
  readonly tokenLifetime: number;
  /** Trusted external issuers (JSON file), if any. */
  readonly trustedIssuersFile: string | undefined;
}

export type LogLevel = 'silent' | 'error' | 'info' | 'debug';

export type DatabaseConfig =
  | { readonly dialect: 'sqlite'; readonly storage: string; readonly synchronous: 'FULL' | 'NORMAL'; readonly busyTimeoutMs?: number }
  | {
      readonly dialect: 'postgres';
      readonly url: string;
      readonly poolMax: number;
      /**
       * `lock_timeout` and `statement_timeout` of every write transaction, ms (every write
       * transaction writes the audit trail: a write's own events, the read requests' group
       * commit, export files): an audit write that cannot proceed fails within this, so the
       * request fails closed with a 503 instead of hanging. 0 turns it off.
       */
      readonly writeTimeoutMs?: number;
    };

/** Thrown for a bad environment value; main.ts prints the message and exits non-zero. */
export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/** Reads and checks the configuration; `cwd` anchors the relative default paths. */
export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Config {
  const dataDir = path.resolve(cwd, env.CUSTODIAN_DATA_DIR || './data');
  const config: Config = {
    port: integer(env, 'PORT', 8080, 0, 65535),
    host: env.HOST || '127.0.0.1',
    baseUrl: env.CUSTODIAN_BASE_URL ? baseUrl('CUSTODIAN_BASE_URL', env.CUSTODIAN_BASE_URL) : undefined,
    trustProxy: trustedProxies(env),
    extraBaseUrls: (env.CUSTODIAN_EXTRA_BASE_URLS ?? '')
      .split(/[\s,]+/)
      .filter(Boolean)
      .map((u) => baseUrl('CUSTODIAN_EXTRA_BASE_URLS', u)),
    dataDir,
    database: database(env, dataDir, cwd),
    maxBodyBytes: byteSize(env, 'CUSTODIAN_MAX_BODY', 5 * 1024 * 1024),
    maxBundleEntries: integer(env, 'CUSTODIAN_MAX_BUNDLE_ENTRIES', 1000, 1, 100000),
    search: {
      defaultCount: integer(env, 'CUSTODIAN_SEARCH_DEFAULT_COUNT', 20, 1, 10000),
      maxCount: integer(env, 'CUSTODIAN_SEARCH_MAX_COUNT', 1000, 1, 10000),
    },
    logLevel: oneOf(env, 'LOG_LEVEL', ['silent', 'error', 'info', 'debug'], 'info'),
    consentDefault: oneOf(env, 'CUSTODIAN_CONSENT_DEFAULT', ['deny', 'permit'], 'deny'),
    benchUnaudited: env.CUSTODIAN_BENCH_UNAUDITED === '1',
    benchAuditFloor: !env.CUSTODIAN_BENCH_AUDIT_FLOOR ? undefined : oneOf(env, 'CUSTODIAN_BENCH_AUDIT_FLOOR', ['row', 'journal'] as const, 'row'),
    auditHeadLogSeconds: integer(env, 'CUSTODIAN_AUDIT_HEAD_LOG_SECONDS', 60, 0, 86400),
    feed: {
      subscriptionEndpoints: endpointAllowList(env),
      deliveryTimeoutMs: integer(env, 'CUSTODIAN_DELIVERY_TIMEOUT_MS', 10000, 100, 600000),
      retryBaseMs: integer(env, 'CUSTODIAN_DELIVERY_RETRY_MS', 1000, 1, 3600000),
      retryMaxMs: integer(env, 'CUSTODIAN_DELIVERY_RETRY_MAX_MS', 300000, 1, 86400000),
      errorAfter: integer(env, 'CUSTODIAN_DELIVERY_ERROR_AFTER', 3, 1, 1000),
      pollMs: integer(env, 'CUSTODIAN_FEED_POLL_MS', 1000, 10, 600000),
      leaseMs: integer(env, 'CUSTODIAN_FEED_LEASE_MS', 30000, 500, 3600000),
      exportFileResources: integer(env, 'CUSTODIAN_EXPORT_FILE_RESOURCES', 5000, 1, 100000),
      exportRetentionSeconds: integer(env, 'CUSTODIAN_EXPORT_RETENTION', 86400, 60, 31536000),
    },
    auth: {
      clientsFile: path.resolve(cwd, env.CUSTODIAN_CLIENTS || path.join(dataDir, 'clients.json')),
      signingKeyFile: path.resolve(cwd, env.CUSTODIAN_SIGNING_KEY || path.join(dataDir, 'keys', 'server-signing-key.json')),
      tokenLifetime: integer(env, 'CUSTODIAN_TOKEN_LIFETIME', 300, 30, 3600),
      trustedIssuersFile: env.CUSTODIAN_TRUSTED_ISSUERS ? path.resolve(cwd, env.CUSTODIAN_TRUSTED_ISSUERS) : undefined,
    },
  };
  if (config.benchAuditFloor && config.database.dialect !== 'sqlite') {
    throw new ConfigError('CUSTODIAN_BENCH_AUDIT_FLOOR', 'is for SQLite only (on PostgreSQL the audit trail is appended without the worker it replaces)');
  }
  if (config.feed.leaseMs <= config.feed.deliveryTimeoutMs) {
    throw new ConfigError('CUSTODIAN_FEED_LEASE_MS', `must be longer than CUSTODIAN_DELIVERY_TIMEOUT_MS (${config.feed.deliveryTimeoutMs}): a delivery must finish within the lease`);
  }
  return config;
}

function baseUrl(variable: string, raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(variable, `"${raw}" is not an absolute URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(variable, 'must be an http or https URL');
  }
  if (url.search || url.hash) throw new ConfigError(variable, 'must not carry a query or fragment');
  return url.toString().replace(/\/+$/, '');
}

const PROXY_KEYWORDS = ['loopback', 'linklocal', 'uniquelocal'];

/** An IPv6 address as the URL parser writes it (`[::ffff:a00:1]`), or '' when it cannot. */
function canonicalIPv6(address: string): string {
  try {
    return new URL(`http://[${address}]/`).hostname;
  } catch {
    return '';
  }
}

/** CUSTODIAN_TRUST_PROXY, checked here and then by Express's own parser (proxy-addr), which is what applies it. */
function trustedProxies(env: Env): string[] {
  const fail = (problem: string): never => {
    throw new ConfigError('CUSTODIAN_TRUST_PROXY', problem);
  };
  const entries = (env.CUSTODIAN_TRUST_PROXY ?? '').split(/[\s,]+/).filter(Boolean);
  for (const e of entries) {
    if (PROXY_KEYWORDS.includes(e)) continue;
    const [address, bits, ...rest] = e.split('/');
    const family = isIP(address);
    const prefixOk = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) >= 1 && Number(bits) <= (family === 6 ? 128 : 32));
    if (!family || !prefixOk || rest.length) fail(`"${e}" is not an IP address, a CIDR range (prefix 1 or longer) or one of ${PROXY_KEYWORDS.join(', ')}`);
    // proxy-addr reads ::ffff:10.0.0.0/8 as the IPv6 range ::/8 (any spelling: the URL parser
    // writes an IPv6 address in its canonical form; a zone id is not part of the address).
    if (family === 6 && /^\[::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}\]$/i.test(canonicalIPv6(address.replace(/%.*$/, '')))) fail(`"${e}": write IPv4 addresses and ranges as IPv4 (10.0.0.0/8, not ::ffff:10.0.0.0/8)`);
  }
  try {
    express().set('trust proxy', entries.length ? entries : false);
  } catch (err) {
    fail((err as Error).message);
  }
  return entries;
}

/** CUSTODIAN_SUBSCRIPTION_ENDPOINTS: comma-separated http(s) URLs (an origin, optionally with a path prefix). */
function endpointAllowList(env: Env): URL[] {
  const raw = env.CUSTODIAN_SUBSCRIPTION_ENDPOINTS;
  if (!raw) return [];
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((entry) => {
      let url: URL;
      try {
        url = new URL(entry);
      } catch {
        throw new ConfigError('CUSTODIAN_SUBSCRIPTION_ENDPOINTS', `"${entry}" is not an absolute URL`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError('CUSTODIAN_SUBSCRIPTION_ENDPOINTS', `"${entry}" is not an http or https URL`);
      if (url.username || url.password || url.search || url.hash) throw new ConfigError('CUSTODIAN_SUBSCRIPTION_ENDPOINTS', `"${entry}" must be an origin with an optional path, without credentials, query or fragment`);
      return url;
    });
}

function database(env: Env, dataDir: string, cwd: string): DatabaseConfig {
  const raw = env.DATABASE_URL;
  const synchronous = oneOf(env, 'CUSTODIAN_SQLITE_SYNC', ['FULL', 'NORMAL'], 'FULL');
  const busyTimeoutMs = integer(env, 'CUSTODIAN_SQLITE_BUSY_TIMEOUT', 10000, 0, 600000);
  if (!raw) return { dialect: 'sqlite', storage: path.join(dataDir, 'custodian.sqlite'), synchronous, busyTimeoutMs };
  if (raw.startsWith('sqlite:')) {
    const file = raw.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (!file) throw new ConfigError('DATABASE_URL', 'sqlite: needs a file path, e.g. sqlite:./data/custodian.sqlite');
    if (file === ':memory:') {
      throw new ConfigError('DATABASE_URL', 'in-memory SQLite is not supported (readers and the writer need separate connections); use a file');
    }
    return { dialect: 'sqlite', storage: path.resolve(cwd, file), synchronous, busyTimeoutMs };
  }
  if (raw.startsWith('postgres://') || raw.startsWith('postgresql://')) {
    try {
      new URL(raw);
    } catch {
      throw new ConfigError('DATABASE_URL', 'is not a valid postgres:// URL');
    }
    return { dialect: 'postgres', url: raw, poolMax: integer(env, 'CUSTODIAN_DB_POOL_MAX', 10, 1, 500), writeTimeoutMs: integer(env, 'CUSTODIAN_AUDIT_WRITE_TIMEOUT_MS', 5000, 0, 600000) };
  }
  throw new ConfigError('DATABASE_URL', 'must start with sqlite: or postgres://');
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `"${raw}" is not a whole number`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `${value} is outside ${min}..${max}`);
  return value;
}

function byteSize(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const m = /^(\d+)\s*(b|kb|mb)?$/i.exec(raw.trim());
  if (!m) throw new ConfigError(name, `"${raw}" is not a size such as 5mb, 512kb or 1048576`);
  const unit = (m[2] || 'b').toLowerCase();
  const value = Number(m[1]) * (unit === 'mb' ? 1024 * 1024 : unit === 'kb' ? 1024 : 1);
  if (value < 1024) throw new ConfigError(name, 'must be at least 1kb');
  return value;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const match = allowed.find((a) => a.toLowerCase() === raw.toLowerCase());
  if (!match) throw new ConfigError(name, `"${raw}" is not one of ${allowed.join(', ')}`);
  return match;
}
