/**
 * Configuration from the environment, in the original ProxyTorrent's `GROUP__FIELD` names so an
 * existing `.env` carries over. Every variable is written once, in `SETTINGS` below (name, parser,
 * default, meaning, where it lands in `Config`): the `Config` type, its mapping and the README's
 * table (`npm run docs:config`) are derived from it. `loadConfig` reads them all, collects every
 * error, and throws one `ConfigError` that names each bad variable. Lists accept a JSON array or
 * comma-separated values; an empty value means "unset" (the original crashed on
 * `PROXY__PROXY_PORT=`).
 *
 * Runs on Workers and Bun: no `node:*` imports, paths are plain strings.
 */
import ipaddr from "ipaddr.js";
import * as v from "valibot";
import { DEFAULT_SCOPES, parseScopes } from "../auth/scopes";
import { decodeSecret } from "../webhooks/signing";

export type Env = Record<string, string | undefined>;

export class ConfigError extends Error {
  constructor(readonly problems: { variable: string; message: string }[]) {
    super("Invalid configuration:\n" + problems.map((p) => `  ${p.variable}: ${p.message}`).join("\n"));
    this.name = "ConfigError";
  }
}

// ---- value parsers (string -> typed), each a valibot schema so messages stay uniform ----

const bool = v.pipe(
  v.string(),
  v.trim(),
  v.toLowerCase(),
  v.picklist(["true", "false", "1", "0", "yes", "no", "on", "off"], "expected true or false"),
  v.transform((s) => ["true", "1", "yes", "on"].includes(s)),
);

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^-?\d+$/, "expected a whole number"),
    v.transform(Number),
    v.minValue(min, `must be at least ${min}`),
    v.maxValue(max, `must be at most ${max}`),
  );

const port = int(0, 65535);
const text = v.pipe(v.string(), v.trim(), v.minLength(1));

const list = v.pipe(
  v.string(),
  v.trim(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const raw = dataset.value;
    if (raw.startsWith("[")) {
      try {
        const parsed: unknown = JSON.parse(raw);
        if (Array.isArray(parsed) && parsed.every((x) => typeof x === "string")) {
          return parsed.map((s) => s.trim()).filter(Boolean);
        }
      } catch {
        /* fall through to the issue below */
      }
      addIssue({ message: "expected a JSON array of strings or comma-separated values" });
      return NEVER;
    }
    return raw
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  }),
);

const httpUrl = v.pipe(
  v.string(),
  v.trim(),
  v.url("expected an absolute URL"),
  v.check((s) => /^https?:\/\//i.test(s), "expected an http:// or https:// URL"),
  v.transform((s) => s.replace(/\/+$/, "")),
);

const pieceSize = v.union(
  [
    v.pipe(v.string(), v.trim(), v.toLowerCase(), v.literal("auto")),
    v.pipe(
      int(16384, 64 * 1024 * 1024),
      v.check((n) => (n & (n - 1)) === 0, "must be a power of two"),
    ),
  ],
  "expected 'auto' or a power of two between 16384 and 67108864",
);

const logLevel = v.pipe(
  v.string(),
  v.trim(),
  v.toUpperCase(),
  v.picklist(["DEBUG", "INFO", "WARNING", "WARN", "ERROR"], "expected DEBUG, INFO, WARNING or ERROR"),
  v.transform((s) => (s === "WARN" ? "WARNING" : s) as "DEBUG" | "INFO" | "WARNING" | "ERROR"),
);

const proxyType = v.pipe(
  v.string(),
  v.trim(),
  v.toLowerCase(),
  v.picklist(["socks5", "socks5h", "http", "https"], "expected socks5, socks5h, http or https"),
);

// ---- the settings table: the one place a setting is written ----

/** Where a setting lands in `Config`, and how the README shows it. */
interface Placement<T, At extends string | undefined, U> {
  /** Path in `Config` (`fetcher.connectTimeoutMs`); none when code after the table builds the value. */
  at?: At;
  /** What the parsed value becomes there (seconds → ms, undefined → null …). */
  map?: (value: T) => U;
  /** The default as the README shows it (Markdown), when it is computed from other settings. */
  shown?: string;
  /** Accepted for compatibility with the original, with no effect (listed below the README's table). */
  compat?: true;
}
/**
 * One setting: how its variable is parsed, its default, its meaning (printed by `proxytorrent
 * config` and in the README's table, which `npm run docs:config` writes from this table), and its
 * placement. A setting without `at` is read by the code after the table (values built from several
 * settings, with their checks) or has no effect (`compat`).
 */
interface Setting<T, At extends string | undefined = string | undefined, U = T> extends Placement<T, At, U> {
  schema: v.GenericSchema<string, T>;
  default: T;
  doc: string;
}
const s = <T, At extends string | undefined = undefined, U = T>(
  schema: v.GenericSchema<string, T>,
  def: T,
  doc: string,
  placement: Placement<T, At, U> = {},
): Setting<T, At, U> => ({ schema, default: def, doc, ...placement });
const opt = <T, At extends string | undefined = undefined, U = T | undefined>(
  schema: v.GenericSchema<string, T>,
  doc: string,
  placement: Placement<T | undefined, At, U> = {},
): Setting<T | undefined, At, U> =>
  s<T | undefined, At, U>(schema as v.GenericSchema<string, T | undefined>, undefined, doc, placement);

const secondsToMs = (seconds: number) => seconds * 1000;
const orNull = <T>(value: T | undefined): T | null => value ?? null;

export const DEFAULT_MIME_WHITELIST = [
  "text/html",
  "text/plain",
  "application/json",
  "application/xml",
  "image/*",
];

/**
 * The Standard Webhooks retry schedule (5 s, 5 min, 30 min, 2 h, 5 h, then every 10 h), in seconds
 * after each failed attempt: the last retry comes about 3.2 days after the first attempt, so a
 * receiver down for three days still gets its events.
 */
export const DEFAULT_WEBHOOK_RETRY_DELAYS = [5, 300, 1800, 7200, 18000, ...Array<number>(7).fill(36000)];

export const SETTINGS = {
  APP_NAME: s(text, "ProxyTorrent", "Service name shown by `GET /` and the API docs.", { at: "appName" }),
  APP_VERSION: s(text, "0.2.0", "Version shown by `GET /`, health and the API docs.", { at: "appVersion" }),
  API_PREFIX: s(
    v.pipe(text, v.regex(/^\/[A-Za-z0-9/_-]*$/, "expected a path such as /v1")),
    "/v1",
    "Prefix of the API routes.",
    { at: "apiPrefix", map: (p) => p.replace(/\/+$/, "") },
  ),
  DEBUG: s(bool, false, "Accepted for compatibility; no effect on error detail.", { compat: true }),
  HOST: s(text, "127.0.0.1", "Address the HTTP server binds to (`0.0.0.0` for all interfaces).", {
    at: "host",
  }),
  PORT: s(port, 8000, "API port; the embedded node serves its tracker and web seed here too.", {
    at: "port",
  }),

  STORAGE__BASE_PATH: s(
    text,
    "./data",
    "Everything the service writes lives under this directory: database, store, temp files.",
    { at: "storage.basePath", map: (p) => p.replace(/\/+$/, "") || "/" },
  ),
  STORAGE__GC_INTERVAL_SECONDS: s(
    int(1, 86400),
    60,
    "How often each node collects garbage: blobs no live job of its own needs, and rows past their retention (safe on any number of nodes at once).",
    { at: "storage.gcIntervalMs", map: secondsToMs },
  ),
  STORAGE__HISTORY_RETENTION: s(
    int(0, 86400 * 36500),
    86400 * 90,
    "Seconds a request stays in the history (status, listing) after it was made, once it is no longer live; its webhook log and its job go with it. `0` keeps history forever.",
    { at: "storage.historyRetentionMs", map: secondsToMs },
  ),
  STORAGE__WEBHOOK_RETENTION: s(
    int(0, 86400 * 36500),
    86400 * 30,
    "Seconds a webhook delivery that ended (delivered or failed) and its attempts stay in the log. `0` keeps them as long as their request.",
    { at: "storage.webhookRetentionMs", map: secondsToMs },
  ),
  STORAGE__NODE_RETENTION: s(
    int(60, 86400 * 36500),
    86400 * 7,
    "Seconds a node's registry row stays after it was last seen (stopped or gone).",
    { at: "storage.nodeRetentionMs", map: secondsToMs },
  ),

  STORAGE__DEFAULT_RETENTION: s(
    int(1),
    604800,
    "Default `retention` of a request in seconds: how long its content stays stored and seeded once it is ready (then the request reads `expired`).",
    { at: "storage.defaultRetention" },
  ),
  STORAGE__MAX_RETENTION: s(
    int(0),
    2592000,
    "Largest `retention` a caller may ask for (larger is refused with 422); bounds how long one POST keeps disk space. 0 = no cap.",
    { at: "storage.maxRetention" },
  ),
  STORAGE__MAX_BYTES: s(
    int(0),
    0,
    "Cap on this node's content store in bytes (blobs plus bodies being written). A body that would cross it, after the node removed content no live request needs, ends in `error` with code `insufficient_storage`. 0 = unlimited.",
    { at: "storage.maxBytes" },
  ),
  STORAGE__MIN_FREE_BYTES: s(
    int(0),
    268435456,
    "Free space in bytes kept on the disk of the store: a body that would eat into it ends in `insufficient_storage`, and a node below it takes no new jobs (health and log say so) until space returns. The default 256 MiB leaves the database (by default on the same disk) room to record what happens. 0 = no margin.",
    { at: "storage.minFreeBytes" },
  ),

  DATABASE__DATABASE_URL: opt(text, "libSQL URL (`file:…`, `libsql://…`, `http(s)://…`).", {
    shown: "`file:$STORAGE__BASE_PATH/proxytorrent.db`",
  }),
  DATABASE__AUTH_TOKEN: opt(text, "Auth token for a remote libSQL/Turso database.", {
    at: "database.authToken",
  }),
  DATABASE__ECHO_SQL: s(bool, false, "Log every SQL statement (debugging).", { at: "database.echoSql" }),

  SECURITY__AUTH_ENABLED: s(
    bool,
    true,
    "Require authentication on every route except /, health and docs; `false` lets anyone use the API (announced at start-up).",
    { at: "security.authEnabled" },
  ),
  SECURITY__BEARER_TOKENS: s(
    list,
    [] as string[],
    "Static bearer tokens, each its own tenant (JSON array or comma-separated); prefer `keys create`.",
    { at: "security.bearerTokens" },
  ),
  SECURITY__HMAC_SECRET: opt(text, "Secret for the legacy body-HMAC scheme (`X-Signature`).", {
    at: "security.hmacSecret",
  }),
  SECURITY__LEGACY_BODY_HMAC: s(
    bool,
    false,
    "Accept the original's replayable body-only `X-Signature` HMAC (old clients only).",
    { at: "security.legacyBodyHmac" },
  ),
  SECURITY__JWT_SECRET: opt(
    text,
    "Accept HS256 JWTs signed with this secret (at least 32 characters); needs JWT_ISSUER and JWT_AUDIENCE.",
  ),
  SECURITY__JWKS_URL: opt(
    httpUrl,
    "Accept JWTs signed by the keys at this JWKS URL (OIDC; rotated by kid). https, or http on loopback.",
  ),
  SECURITY__JWT_ISSUER: opt(text, "Required `iss` of every JWT; required with JWTs."),
  SECURITY__JWT_AUDIENCE: s(
    list,
    [] as string[],
    "Accepted `aud` values of JWTs (one is enough); required with JWTs.",
  ),
  SECURITY__JWT_ALGORITHMS: s(
    list,
    [] as string[],
    "Accepted JWT algorithms. Default: HS256 with JWT_SECRET, RS256 and ES256 with JWKS_URL.",
  ),
  SECURITY__JWT_DEFAULT_SCOPES: s(
    list,
    [...DEFAULT_SCOPES] as string[],
    "Scopes of a JWT whose `scope`/`scp` claim names none of ours.",
  ),
  SECURITY__JWKS_COOLDOWN_SECONDS: s(
    int(0, 3600),
    30,
    "Least time between JWKS refetches caused by tokens with an unknown kid.",
  ),
  SECURITY__TRUSTED_PROXIES: s(
    list,
    [] as string[],
    "Reverse proxies (IPs or CIDRs) whose `X-Forwarded-For` names the client; others' is ignored.",
    { at: "security.trustedProxies" },
  ),
  SECURITY__SIGNATURE_WINDOW_SECONDS: s(
    int(10, 3600),
    300,
    "How far the `created` time of a signed request may be from the server's clock.",
    { at: "security.signatureWindowSeconds" },
  ),
  SECURITY__API_KEY_CACHE_SECONDS: s(
    int(0, 300),
    5,
    "How long an API process trusts an API key it has verified before reading the database again: a revoked key keeps working for at most this long; 0 checks every request.",
    { at: "security.apiKeyCacheMs", map: secondsToMs },
  ),
  SECURITY__KEY_ENCRYPTION_SECRET: opt(
    text,
    "Seals the stored hash of each API key (AES-256-GCM; the HMAC key of signed requests) so the database alone cannot sign; at least 32 characters, the same in every API process, the Worker and `keys` command (docs/auth.md).",
    { at: "security.keyEncryptionSecret" },
  ),
  SECURITY__MAX_BODY_BYTES: s(
    int(1024, 1024 * 1024 * 1024),
    2 * 1024 * 1024,
    "Largest request body in bytes on every route (413 beyond it, see Limits), counted while reading. Default 2 MiB: room for a 1 MiB `body` field.",
    { at: "security.maxBodyBytes" },
  ),

  PROXY__PROXY_ENABLED: s(
    bool,
    false,
    "Send every fetch through the proxy below; enabled without a host or port refuses to start.",
  ),
  PROXY__PROXY_TYPE: s(proxyType, "socks5" as string, "socks5, socks5h, http or https."),
  PROXY__PROXY_HOST: opt(text, "Proxy host."),
  PROXY__PROXY_PORT: opt(port, "Proxy port."),
  PROXY__PROXY_USERNAME: opt(text, "Proxy user name."),
  PROXY__PROXY_PASSWORD: opt(text, "Proxy password (never logged)."),
  PROXY__PROXY_URL: opt(
    text,
    "All of the above in one URL (`socks5://`, `socks5h://`, `http://`, `https://`), e.g. `socks5h://user:pass@host:1080`.",
  ),

  FETCHER__CONNECT_TIMEOUT: s(int(1, 3600), 10, "Seconds to establish a connection.", {
    at: "fetcher.connectTimeoutMs",
    map: secondsToMs,
  }),
  FETCHER__READ_TIMEOUT: s(int(1, 3600), 30, "Seconds a read may stay idle.", {
    at: "fetcher.readTimeoutMs",
    map: secondsToMs,
  }),
  FETCHER__TOTAL_TIMEOUT: s(int(1, 86400), 600, "Seconds for a whole fetch, body included.", {
    at: "fetcher.totalTimeoutMs",
    map: secondsToMs,
  }),
  FETCHER__MAX_SIZE: s(int(1), 52428800, "Largest body in bytes, enforced while streaming.", {
    at: "fetcher.maxSize",
  }),
  FETCHER__MIME_WHITELIST: s(
    list,
    DEFAULT_MIME_WHITELIST,
    "Allowed Content-Types (`type/*` wildcards; `*/*` allows all).",
    { at: "fetcher.mimeWhitelist", map: (l) => l.map((m) => m.toLowerCase()) },
  ),
  FETCHER__VERIFY_SSL: s(bool, true, "Verify TLS certificates of origins.", { at: "fetcher.verifySsl" }),
  FETCHER__USER_AGENT: s(
    text,
    "ProxyTorrent/0.2.0",
    "User-Agent sent to origins unless the caller sets one.",
    { at: "fetcher.userAgent" },
  ),
  FETCHER__MAX_REDIRECTS: s(int(0, 50), 10, "Redirects followed per fetch; each hop is checked again.", {
    at: "fetcher.maxRedirects",
  }),
  FETCHER__MAX_ATTEMPTS: s(int(1, 100), 3, "Attempts per job for transient failures (with backoff).", {
    at: "fetcher.maxAttempts",
  }),
  FETCHER__URL_ALLOWLIST: s(
    list,
    [] as string[],
    "If set, only these host patterns (`example.com`, `*.example.com`) or IPs/CIDRs (matched against resolved addresses too) may be fetched.",
    { at: "fetcher.urlAllowlist" },
  ),
  FETCHER__URL_DENYLIST: s(
    list,
    [] as string[],
    "Host patterns, IPs and CIDRs (matched against resolved addresses too) that may never be fetched.",
    { at: "fetcher.urlDenylist" },
  ),
  FETCHER__MAX_RESUMES: s(int(0, 100), 3, "Times an interrupted body is resumed with Range (or restarted).", {
    at: "fetcher.maxResumes",
  }),
  FETCHER__MAX_DECOMPRESSION_RATIO: s(
    int(2, 100000),
    200,
    "Decoded/encoded size beyond which a body is refused as a bomb.",
    { at: "fetcher.maxDecompressionRatio" },
  ),
  FETCHER__CA_FILE: opt(
    text,
    "PEM file of CA certificates to trust instead of the system's (private CAs, https proxies).",
    { at: "fetcher.caFile" },
  ),

  SCAN__CLAMD: opt(
    text,
    "clamd to scan every fetched body with (INSTREAM): a unix socket path or `host:port`. Unset: no scanning.",
    { at: "scan.clamd", map: orNull },
  ),
  SCAN__FAIL_OPEN: s(
    bool,
    false,
    "When clamd is down, times out or the body exceeds `SCAN__MAX_BYTES`: `true` lets the body through unscanned (a warning each time), `false` ends the request in `error`.",
    { at: "scan.failOpen" },
  ),
  SCAN__TIMEOUT_MS: s(
    int(100, 3600000),
    60000,
    "Milliseconds a whole scan may take (connect, stream, verdict).",
    {
      at: "scan.timeoutMs",
    },
  ),
  SCAN__MAX_BYTES: s(
    int(1, 4294967295),
    104857600,
    "Largest body sent to clamd; keep it at or below clamd's `StreamMaxLength` (its default, 100 MB, is this default). Larger bodies are handled as a scan failure (see `SCAN__FAIL_OPEN`).",
    { at: "scan.maxBytes" },
  ),

  EGRESS__ALLOW_PRIVATE_NETWORKS: s(
    bool,
    false,
    "Allow fetches to loopback/private/link-local addresses (tests, trusted networks only).",
    { at: "egress.allowPrivateNetworks" },
  ),
  EGRESS__REQUIRE_PROXY: s(
    bool,
    false,
    "Requests made here may only be fetched by nodes with a proxy (implied when this process has one); set it on an API without a proxy in front of proxied nodes.",
    { at: "egress.requireProxy" },
  ),

  TORRENT__PRIVATE_TRACKER: s(bool, true, "Mark torrents private (no DHT/PEX).", { at: "torrent.private" }),
  TORRENT__ACCESS: s(
    v.picklist(["passkey", "open"], "expected passkey or open"),
    "passkey" as "passkey" | "open",
    "`passkey`: only the owners of a request can download its content (passkeyed tracker, web seed and BitTorrent port); `open`: anyone who has the infohash or content hash can (public, Burnbit-style torrents).",
    { at: "torrent.access" },
  ),
  TORRENT__PASSKEY_TTL_SECONDS: s(
    int(0),
    0,
    "Passkeys stop working this long after their request became ready (or was made, if later); 0 = never (a .torrent is often kept and used later).",
    { at: "torrent.passkeyTtlSeconds" },
  ),
  TORRENT__PIECE_SIZE: s(
    pieceSize as v.GenericSchema<string, number | "auto">,
    "auto" as number | "auto",
    "Piece length in bytes (a power of two), or `auto` (256 KiB for small files, at least 1 MiB above 64 MiB).",
    { at: "torrent.pieceSize" },
  ),
  TORRENT__ANNOUNCE_URL: opt(
    httpUrl,
    "Extra tracker announced after the node's own (opt-in: it reaches out).",
    {
      at: "torrent.announceUrl",
    },
  ),
  TORRENT__ENCRYPTION_ENABLED: s(
    bool,
    true,
    "Accepted for compatibility; no effect (peers may always use encryption, MSE with plaintext fallback).",
    { compat: true },
  ),
  TORRENT__UPLOAD_RATE_LIMIT: s(int(0), 0, "Upload limit in bytes/s, 0 = unlimited.", {
    at: "torrent.uploadRateLimit",
  }),
  TORRENT__DOWNLOAD_RATE_LIMIT: s(int(0), 0, "Accepted for compatibility (a seeder does not download).", {
    compat: true,
  }),
  TORRENT__MAX_CONNECTIONS: s(int(1, 100000), 200, "Peer connections per torrent.", {
    at: "torrent.maxConnections",
  }),
  TORRENT__LISTEN_PORT: s(port, 6881, "BitTorrent TCP port.", { at: "torrent.listenPort" }),
  TORRENT__LISTEN_HOST: opt(
    text,
    "Address the BitTorrent port binds to. Default: HOST (so HOST=127.0.0.1 keeps peers on this machine).",
    { shown: "`HOST`" },
  ),

  NODE__NAME: s(text, "node-1", "This node's name, unique per database.", { at: "node.name" }),
  NODE__HTTP_PORT: opt(port, "Separate port for the tracker and web seed (default: share PORT).", {
    at: "node.httpPort",
  }),
  NODE__PUBLIC_URL: opt(
    httpUrl,
    "How peers reach this node's tracker and web seed. Default http://HOST:port (loopback if HOST is 0.0.0.0).",
    { shown: "`http://HOST:port`" },
  ),
  NODE__REGION: opt(
    v.pipe(text, v.regex(/^[A-Za-z0-9._-]{1,64}$/, "expected 1-64 letters, digits, . _ -")),
    "Region this node serves; requests asking for it go only to such nodes.",
    { at: "node.region", map: orNull },
  ),
  NODE__POOL: opt(
    v.pipe(text, v.regex(/^[A-Za-z0-9._-]{1,64}$/, "expected 1-64 letters, digits, . _ -")),
    "Proxy pool this node belongs to; requests asking for it go only to such nodes.",
    { at: "node.pool", map: orNull },
  ),
  NODE__ANNOUNCE_IP: opt(
    v.pipe(text, v.ip("expected an IPv4 or IPv6 address")),
    "Address the tracker hands out for this node's seeder. Default: NODE__PUBLIC_URL's host if it is an IP, else the address its announces come from.",
    { shown: "host of `NODE__PUBLIC_URL` if an IP" },
  ),
  NODE__LEASE_SECONDS: s(
    int(5, 3600),
    30,
    "Job lease length; a node that stops heart-beating loses its jobs.",
    { at: "node.leaseSeconds" },
  ),
  NODE__CONCURRENCY: s(int(1, 256), 8, "Jobs a node works on at once.", { at: "node.concurrency" }),
  NODE__POLL_INTERVAL_MS: s(int(10, 60000), 500, "How often an idle node looks for work and due webhooks.", {
    at: "node.pollIntervalMs",
  }),
  NODE__HEARTBEAT_INTERVAL_MS: s(
    int(50, 10000),
    5000,
    "How often a node refreshes its row in the node registry; one silent for 30 s counts as gone, so at most 10000.",
    { at: "node.heartbeatIntervalMs" },
  ),
  NODE__RESEED_INTERVAL_MS: s(
    int(50, 3600000),
    2000,
    "How often a node makes its seeding match the database: seeds what became ready for it, stops seeding what was cancelled or expired.",
    { at: "node.reseedIntervalMs" },
  ),

  CACHE__DEFAULT_TTL: s(int(0, 86400 * 365), 3600, "Default `ttl` of a request in seconds.", {
    at: "cache.defaultTtl",
  }),
  CACHE__MAX_TTL: s(int(0, 86400 * 365), 86400, "Largest `ttl` a caller may ask for.", {
    at: "cache.maxTtl",
  }),
  CACHE__SHARE_ACROSS_TENANTS: s(
    bool,
    false,
    "Let a tenant's request reuse another tenant's ready result (`ttl`) or fetch in flight (reveals what others fetched).",
    { at: "cache.shareAcrossTenants" },
  ),

  RATE_LIMIT__RATE_LIMIT_ENABLED: s(bool, true, "Enable rate limits.", { at: "rateLimit.enabled" }),
  RATE_LIMIT__REQUESTS_PER_MINUTE: s(int(1), 60, "Creates per principal per minute.", {
    at: "rateLimit.perMinute",
  }),
  RATE_LIMIT__REQUESTS_PER_HOUR: s(int(1), 1000, "Creates per principal per hour.", {
    at: "rateLimit.perHour",
  }),
  RATE_LIMIT__REQUESTS_PER_IP_MINUTE: s(int(1), 100, "Creates per client IP per minute.", {
    at: "rateLimit.perIpMinute",
  }),
  RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: s(
    int(1),
    30,
    "Failed authentications per client IP per minute; past it the IP gets 429 until the minute ends.",
    { at: "rateLimit.authFailuresPerIpMinute" },
  ),

  QUOTA__MAX_BYTES: s(
    int(0),
    0,
    "Default stored-bytes quota per tenant (its ready requests' content, each content hash once); a POST is refused (403) while usage is at or over it. 0 = unlimited; per key: `keys set --max-bytes`.",
    { at: "quota.maxBytes" },
  ),
  QUOTA__MAX_ACTIVE: s(
    int(0),
    100,
    "Default active-request quota per tenant (queued, fetching, packaging or seeding); a POST is refused (403) at it. 0 = unlimited; per key: `keys set --max-active`.",
    { at: "quota.maxActive" },
  ),

  WEBHOOK__SECRET: s(
    list,
    [] as string[],
    "Signing secret (`whsec_…`) of `callback_url` deliveries; during a rotation list new and old (comma-separated), each signs.",
    { at: "webhook.secrets" },
  ),
  WEBHOOK__RETRY_DELAYS: s(
    list,
    DEFAULT_WEBHOOK_RETRY_DELAYS.map(String),
    "Seconds before each retry of a failed webhook (comma-separated; default 5s, 5m, 30m, 2h, 5h, then 10h seven times: about 3.2 days).",
    { shown: "`5,300,1800,7200,18000,36000…`" },
  ),
  WEBHOOK__TIMEOUT: s(int(1, 300), 15, "Seconds a webhook receiver has to answer one attempt.", {
    at: "webhook.timeoutMs",
    map: secondsToMs,
  }),

  MONITORING__LOG_LEVEL: s(
    logLevel,
    "INFO" as "DEBUG" | "INFO" | "WARNING" | "ERROR",
    "DEBUG, INFO, WARNING or ERROR.",
    { at: "monitoring.logLevel" },
  ),
  MONITORING__JSON_LOGS: s(
    bool,
    true,
    "JSON lines (true), one per HTTP request plus pipeline events, or readable text (false).",
    { at: "monitoring.jsonLogs" },
  ),
  MONITORING__METRICS_ENABLED: s(
    bool,
    true,
    "Serve Prometheus text at `/metrics` on the API port and each node's HTTP port.",
    { at: "monitoring.metricsEnabled" },
  ),
} as const;

type Settings = typeof SETTINGS;
export type RawConfig = { [K in keyof Settings]: Settings[K]["default"] };

/** Read every setting; throw one ConfigError naming all bad variables. */
export function readSettings(env: Env): RawConfig {
  const out: Record<string, unknown> = {};
  const problems: { variable: string; message: string }[] = [];
  for (const [name, setting] of Object.entries(SETTINGS) as [string, Setting<unknown>][]) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === "") {
      out[name] = setting.default;
      continue;
    }
    const res = v.safeParse(setting.schema, raw);
    if (res.success) out[name] = res.output;
    else
      problems.push({
        variable: name,
        message: `${res.issues[0]?.message ?? "invalid"} (got ${JSON.stringify(redact(name, raw))})`,
      });
  }
  if (problems.length) throw new ConfigError(problems);
  return out as RawConfig;
}

function redact(name: string, raw: string): string {
  return /PASSWORD|SECRET|TOKEN|_URL$/.test(name) && !/ANNOUNCE|PUBLIC/.test(name) ? "***" : raw;
}

export interface ProxyConfig {
  type: "socks5" | "socks5h" | "http" | "https";
  host: string;
  port: number;
  username?: string;
  password?: string;
}

export interface JwtConfig {
  /** HS256/384/512 shared secret, or … */
  secret?: string;
  /** … the issuer's JWKS URL (asymmetric keys). Exactly one of the two is set. */
  jwksUrl?: string;
  issuer: string;
  audience: string[];
  algorithms: string[];
  defaultScopes: string[];
  jwksCooldownSeconds: number;
}

const HMAC_JWT_ALGS = ["HS256", "HS384", "HS512"];
const ASYMMETRIC_JWT_ALGS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
];

/** JWT settings → JwtConfig (or null), adding a problem per bad or missing variable. */
function jwtConfig(r: RawConfig, problems: { variable: string; message: string }[]): JwtConfig | null {
  const secret = r.SECURITY__JWT_SECRET;
  const jwksUrl = r.SECURITY__JWKS_URL;
  if (!secret && !jwksUrl) {
    for (const name of [
      "SECURITY__JWT_ISSUER",
      "SECURITY__JWT_AUDIENCE",
      "SECURITY__JWT_ALGORITHMS",
    ] as const) {
      const set = Array.isArray(r[name]) ? (r[name] as string[]).length > 0 : r[name] !== undefined;
      if (set)
        problems.push({
          variable: name,
          message: "is set, but neither SECURITY__JWT_SECRET nor SECURITY__JWKS_URL is: JWTs are not enabled",
        });
    }
    return null;
  }
  const before = problems.length;
  if (secret && jwksUrl)
    problems.push({
      variable: "SECURITY__JWKS_URL",
      message: "set either SECURITY__JWT_SECRET (HS256) or SECURITY__JWKS_URL (asymmetric), not both",
    });
  if (secret && secret.length < 32)
    problems.push({ variable: "SECURITY__JWT_SECRET", message: "must be at least 32 characters (256 bits)" });
  if (jwksUrl) {
    const u = new URL(jwksUrl);
    const host = u.hostname.replace(/^\[|\]$/g, "");
    const loopback =
      host === "localhost" || (ipaddr.isValid(host) && ipaddr.process(host).range() === "loopback");
    if (u.protocol !== "https:" && !loopback)
      problems.push({
        variable: "SECURITY__JWKS_URL",
        message: "must be https:// (plain http only on loopback): keys fetched in clear could be replaced",
      });
  }
  if (!r.SECURITY__JWT_ISSUER)
    problems.push({ variable: "SECURITY__JWT_ISSUER", message: "is required when JWTs are enabled" });
  if (r.SECURITY__JWT_AUDIENCE.length === 0)
    problems.push({ variable: "SECURITY__JWT_AUDIENCE", message: "is required when JWTs are enabled" });
  const allowed = secret ? HMAC_JWT_ALGS : ASYMMETRIC_JWT_ALGS;
  const algorithms = r.SECURITY__JWT_ALGORITHMS.length
    ? r.SECURITY__JWT_ALGORITHMS
    : secret
      ? ["HS256"]
      : ["RS256", "ES256"];
  const bad = algorithms.filter((a) => !allowed.includes(a));
  if (bad.length)
    problems.push({
      variable: "SECURITY__JWT_ALGORITHMS",
      message: `${bad.join(", ")} not allowed with ${secret ? "SECURITY__JWT_SECRET" : "SECURITY__JWKS_URL"} (use ${allowed.join(", ")})`,
    });
  const { unknown } = parseScopes(r.SECURITY__JWT_DEFAULT_SCOPES);
  if (unknown.length)
    problems.push({
      variable: "SECURITY__JWT_DEFAULT_SCOPES",
      message: `unknown scope ${unknown.join(", ")}`,
    });
  if (problems.length > before) return null;
  return {
    secret,
    jwksUrl,
    issuer: r.SECURITY__JWT_ISSUER!,
    audience: r.SECURITY__JWT_AUDIENCE,
    algorithms,
    defaultScopes: r.SECURITY__JWT_DEFAULT_SCOPES,
    jwksCooldownSeconds: r.SECURITY__JWKS_COOLDOWN_SECONDS,
  };
}

/** Each entry must be an IP address or a CIDR. */
function trustedProxyProblems(list: string[]): string[] {
  return list.filter((e) => !(e.includes("/") ? ipaddr.isValidCIDR(e) : ipaddr.isValid(e)));
}

/** `"fetcher.maxSize"` and a value type → `{ fetcher: { maxSize: V } }` (optional when V may be undefined). */
type Nest<Path extends string, V> = Path extends `${infer Group}.${infer Rest}`
  ? { [K in Group]: Nest<Rest, V> }
  : undefined extends V
    ? { [K in Path]?: V }
    : { [K in Path]: V };
type Placed<S> =
  S extends Setting<any, infer At, infer U> ? (At extends string ? Nest<At, U> : never) : never;
type Intersect<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never;
/** Each group's intersection merged into one object type, so editors show `config.fetcher` whole. */
type Flat<T> = {
  [K in keyof T]: T[K] extends readonly unknown[]
    ? T[K]
    : T[K] extends object
      ? { [J in keyof T[K]]: T[K][J] }
      : T[K];
};

/** What the table itself puts into Config: every setting with `at`. */
type TableConfig = Intersect<{ [K in keyof Settings]: Placed<Settings[K]> }[keyof Settings]>;

/** The parts of Config that `loadConfig` builds from several settings, after checking them together. */
interface CombinedConfig {
  database: {
    /** DATABASE__DATABASE_URL, else the file under STORAGE__BASE_PATH. */
    url: string;
  };
  security: {
    /** Null when no JWT issuer is configured. */
    jwt: JwtConfig | null;
  };
  proxy: ProxyConfig | null;
  torrent: {
    /** Address the BitTorrent port binds to (TORRENT__LISTEN_HOST, else HOST). */
    listenHost: string;
  };
  node: { publicUrl: string; announceIp: string | null };
  webhook: {
    /** Wait before each retry; its length is the number of retries. */
    retryDelaysMs: number[];
  };
}

/** The typed configuration used everywhere else: SETTINGS placed by their `at`, plus the combined parts. */
export type Config = Flat<TableConfig & CombinedConfig>;

/** Each setting that has an `at`, its value (after `map`) at that path. */
function placeSettings(r: RawConfig): TableConfig {
  const out: Record<string, unknown> = {};
  for (const [name, setting] of Object.entries(SETTINGS) as [keyof RawConfig, Setting<unknown>][]) {
    if (!setting.at) continue;
    const path = setting.at.split(".");
    const field = path.pop()!;
    let group = out;
    for (const key of path) {
      group[key] ??= {};
      group = group[key] as Record<string, unknown>;
    }
    group[field] = setting.map ? setting.map(r[name]) : r[name];
  }
  return out as TableConfig;
}

/** Parse the environment into the typed configuration used everywhere else. */
export function loadConfig(env: Env): Config {
  const r = readSettings(env);
  const problems: { variable: string; message: string }[] = [];

  let proxy: ProxyConfig | null = null;
  if (r.PROXY__PROXY_URL) {
    try {
      proxy = parseProxyUrl(r.PROXY__PROXY_URL);
    } catch (e) {
      problems.push({ variable: "PROXY__PROXY_URL", message: (e as Error).message });
    }
  } else if (r.PROXY__PROXY_ENABLED) {
    if (!r.PROXY__PROXY_HOST)
      problems.push({
        variable: "PROXY__PROXY_HOST",
        message: "PROXY__PROXY_ENABLED=true needs a proxy host (refusing to fetch directly)",
      });
    if (!r.PROXY__PROXY_PORT)
      problems.push({
        variable: "PROXY__PROXY_PORT",
        message: "PROXY__PROXY_ENABLED=true needs a proxy port (refusing to fetch directly)",
      });
    if (r.PROXY__PROXY_HOST && r.PROXY__PROXY_PORT)
      proxy = {
        type: r.PROXY__PROXY_TYPE as ProxyConfig["type"],
        host: r.PROXY__PROXY_HOST,
        port: r.PROXY__PROXY_PORT,
        username: r.PROXY__PROXY_USERNAME,
        password: r.PROXY__PROXY_PASSWORD,
      };
  }
  if (r.STORAGE__MAX_RETENTION > 0 && r.STORAGE__DEFAULT_RETENTION > r.STORAGE__MAX_RETENTION)
    problems.push({
      variable: "STORAGE__DEFAULT_RETENTION",
      message: "must not exceed STORAGE__MAX_RETENTION",
    });
  if (r.CACHE__DEFAULT_TTL > r.CACHE__MAX_TTL)
    problems.push({ variable: "CACHE__DEFAULT_TTL", message: "must not exceed CACHE__MAX_TTL" });
  const jwt = jwtConfig(r, problems);
  const badProxies = trustedProxyProblems(r.SECURITY__TRUSTED_PROXIES);
  if (badProxies.length)
    problems.push({
      variable: "SECURITY__TRUSTED_PROXIES",
      message: `not an IP address or CIDR: ${badProxies.join(", ")}`,
    });
  if (r.SECURITY__LEGACY_BODY_HMAC && !r.SECURITY__HMAC_SECRET)
    problems.push({
      variable: "SECURITY__HMAC_SECRET",
      message: "SECURITY__LEGACY_BODY_HMAC=true needs the shared secret the old clients sign with",
    });
  for (const secret of r.WEBHOOK__SECRET) {
    const decoded = decodeSecret(secret);
    if ("problem" in decoded) problems.push({ variable: "WEBHOOK__SECRET", message: decoded.problem });
  }
  const retryDelays = r.WEBHOOK__RETRY_DELAYS.map((d) => (/^\d+$/.test(d) ? Number(d) : Number.NaN));
  if (retryDelays.some((d) => !Number.isSafeInteger(d) || d > 7 * 86400))
    problems.push({
      variable: "WEBHOOK__RETRY_DELAYS",
      message: "expected whole numbers of seconds (at most 604800 each), e.g. 5,300,1800",
    });
  if (r.SECURITY__KEY_ENCRYPTION_SECRET && r.SECURITY__KEY_ENCRYPTION_SECRET.length < 32)
    problems.push({
      variable: "SECURITY__KEY_ENCRYPTION_SECRET",
      message: "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
    });
  const dbScheme = /^([A-Za-z][A-Za-z0-9+.-]*):/
    .exec(r.DATABASE__DATABASE_URL ?? "file:")?.[1]
    ?.toLowerCase();
  if (!dbScheme || !DATABASE_SCHEMES.includes(dbScheme))
    problems.push({
      variable: "DATABASE__DATABASE_URL",
      message: `unsupported scheme ${dbScheme ? `${dbScheme}:` : "(none)"}; use a libSQL URL: ${DATABASE_SCHEMES.map((x) => `${x}:`).join(", ")} (PostgreSQL and MySQL are not supported)`,
    });
  if (problems.length) throw new ConfigError(problems);

  const table = placeSettings(r);
  const nodePort = r.NODE__HTTP_PORT ?? r.PORT;
  const publicHost = r.HOST === "0.0.0.0" || r.HOST === "::" ? "127.0.0.1" : r.HOST;
  const hostForUrl = publicHost.includes(":") ? `[${publicHost}]` : publicHost;
  const publicUrl = r.NODE__PUBLIC_URL ?? `http://${hostForUrl}:${nodePort}`;
  const combined: CombinedConfig = {
    database: { url: r.DATABASE__DATABASE_URL ?? `file:${table.storage.basePath}/proxytorrent.db` },
    security: { jwt },
    proxy,
    torrent: { listenHost: r.TORRENT__LISTEN_HOST ?? r.HOST },
    node: { publicUrl, announceIp: r.NODE__ANNOUNCE_IP ?? ipHostOf(publicUrl) },
    webhook: { retryDelaysMs: retryDelays.map((d) => d * 1000) },
  };
  return {
    ...table,
    ...combined,
    database: { ...table.database, ...combined.database },
    security: { ...table.security, ...combined.security },
    torrent: { ...table.torrent, ...combined.torrent },
    node: { ...table.node, ...combined.node },
    webhook: { ...table.webhook, ...combined.webhook },
  };
}

/** The host of a URL when it is an IP literal (brackets removed), else null. */
function ipHostOf(url: string): string | null {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
  return v.is(v.pipe(v.string(), v.ip()), host) ? host : null;
}

/** `socks5h://user:p%40ss@host:1080` -> ProxyConfig, with credentials percent-decoded. */
export function parseProxyUrl(raw: string): ProxyConfig {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error("expected a URL such as socks5h://user:pass@host:1080");
  }
  const type = u.protocol.replace(/:$/, "").toLowerCase();
  if (!["socks5", "socks5h", "http", "https"].includes(type))
    throw new Error(`unsupported proxy scheme ${type}: (use socks5, socks5h, http or https)`);
  if (!u.hostname) throw new Error("proxy URL has no host");
  const defaultPort = type === "http" ? 80 : type === "https" ? 443 : 1080;
  return {
    type: type as ProxyConfig["type"],
    host: u.hostname.replace(/^\[|\]$/g, ""),
    port: u.port ? Number(u.port) : defaultPort,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
  };
}

/** The URL schemes @libsql/client opens (anything else is a config error, not a crash). */
export const DATABASE_SCHEMES = ["file", "libsql", "http", "https", "ws", "wss"];

/**
 * A URL for display: the password of its userinfo and token-like query parameters replaced by
 * `***`, everything else kept readable (`socks5h://alice:***@127.0.0.1:1080`).
 */
export function maskUrlSecrets(raw: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/s.exec(raw);
  let out = raw;
  if (m) {
    const [, scheme, authority, rest] = m as unknown as [string, string, string, string];
    const at = authority.lastIndexOf("@");
    const colon = at < 0 ? -1 : authority.slice(0, at).indexOf(":");
    out = colon < 0 ? raw : `${scheme}${authority.slice(0, colon)}:***${authority.slice(at)}${rest}`;
  }
  return out.replace(/([?&](?:authToken|token|password|passkey|key|secret)=)[^&#]*/gi, "$1***");
}

/**
 * The original ProxyTorrent's names that this one reads no more on purpose (README,
 * Configuration): never reported as unknown.
 */
export const IGNORED_ORIGINAL_SETTINGS = [
  "CACHE__CACHE_ENABLED",
  "CACHE__REDIS_URL",
  "STORAGE__CONTENT_PATH",
  "STORAGE__TORRENT_PATH",
  "STORAGE__RESUME_PATH",
];

/**
 * Variables that look like one of our `GROUP__FIELD` settings (a known group) but are not one,
 * e.g. `SECURITY__AUTH_ENABLE`, each with the closest known name when one is close enough.
 * Variables of other groups (PATH, BUN_…, someone else's FOO__BAR) are not ours to judge.
 */
export function unknownSettings(env: Env): { variable: string; suggestion: string | null }[] {
  const known = Object.keys(SETTINGS);
  const groups = new Set(known.filter((k) => k.includes("__")).map((k) => k.slice(0, k.indexOf("__"))));
  const out: { variable: string; suggestion: string | null }[] = [];
  for (const name of Object.keys(env)) {
    const sep = name.indexOf("__");
    if (sep <= 0 || !groups.has(name.slice(0, sep).toUpperCase())) continue;
    if (name in SETTINGS || IGNORED_ORIGINAL_SETTINGS.includes(name)) continue;
    const upper = name.toUpperCase();
    const field = upper.slice(sep + 2);
    let best: string | null = null;
    let bestDistance = Number.POSITIVE_INFINITY;
    for (const k of known) {
      const d = editDistance(upper, k);
      if (d < bestDistance) [best, bestDistance] = [k, d];
    }
    // Close enough to be a typo, or the known field contains the one given (PROXY__URL).
    const close =
      best !== null &&
      (bestDistance <= Math.max(2, Math.floor(field.length / 3)) ||
        (best.startsWith(upper.slice(0, sep + 2)) && field.length >= 3 && best.endsWith(field)));
    out.push({ variable: name, suggestion: close ? best : null });
  }
  return out;
}

/** One line per unknown setting, for the log and `proxytorrent config`. */
export function unknownSettingMessage(u: { variable: string; suggestion: string | null }): string {
  return `unknown setting ${u.variable} is ignored${u.suggestion ? `; did you mean ${u.suggestion}?` : ""}`;
}

/**
 * Levenshtein distance. Ten lines here rather than a dependency: it runs on Workers and Bun alike,
 * and only compares a handful of short names once at start-up.
 */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}
