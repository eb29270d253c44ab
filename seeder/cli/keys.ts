/**
 * `proxytorrent keys create|list|revoke`: API keys in the service's database (the one
 * DATABASE__DATABASE_URL / STORAGE__BASE_PATH names, local file or Turso). Migrations are applied
 * first, so a key can be made before the service has ever started.
 */
import type { Command } from "commander";
import { apiKeyId } from "../../src/auth/key-format";
import {
  type ApiKeyInfo,
  createApiKey,
  listApiKeys,
  revokeApiKey,
  sealStoredHashes,
  setApiKeyQuotas,
} from "../../src/auth/keys";
import { DEFAULT_SCOPES, parseScopes, SCOPES, type Scope } from "../../src/auth/scopes";
import { type Config, ConfigError, loadConfig } from "../../src/config";
import type { Database } from "../../src/db";
import { DatabaseError, openDatabase, runMigrations } from "../process/database";

function fail(message: string, code = 2): never {
  console.error(message);
  process.exit(code);
}

function configOrFail(): Config {
  try {
    return loadConfig(process.env);
  } catch (e) {
    if (e instanceof ConfigError)
      fail(`${e.message}\n\nFix the variables above (environment or .env) and try again.`);
    throw e;
  }
}

/** Where this configuration's API answers, for the example printed after `keys create`. */
export function apiBaseUrl(config: Config): string {
  // The node's public URL is the API's too when both share one port (the embedded default).
  if (process.env.NODE__PUBLIC_URL && !config.node.httpPort) return config.node.publicUrl;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  return `http://${host.includes(":") ? `[${host}]` : host}:${config.port}`;
}

async function withDatabase<T>(fn: (db: Database, config: Config) => Promise<T>): Promise<T> {
  const config = configOrFail();
  let opened: Awaited<ReturnType<typeof openDatabase>>;
  try {
    opened = await openDatabase(config);
    await runMigrations(opened.db).catch((e) => {
      opened.client.close();
      throw e;
    });
  } catch (e) {
    if (e instanceof DatabaseError) fail(e.message, 1);
    throw e;
  }
  const { client, db } = opened;
  try {
    // Keys made before SECURITY__KEY_ENCRYPTION_SECRET was set are sealed by any command that has it.
    await sealStoredHashes(db, config.security.keyEncryptionSecret);
    return await fn(db, config);
  } finally {
    client.close();
  }
}

/** `--max-bytes` / `--max-active`: a whole number (0 = unlimited) or `default` (the QUOTA__* setting). */
function quotaOption(flag: string, raw: string | undefined): number | null | undefined {
  if (raw === undefined) return undefined;
  const value = raw.trim().toLowerCase();
  if (value === "default") return null;
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)))
    fail(`${flag} must be a whole number (0 = unlimited) or "default", got ${JSON.stringify(raw)}`);
  return Number(value);
}

/** A key's quota as `keys list` shows it. */
const quotaText = (value: number | null, setting: string) =>
  value === null ? `default (${setting})` : value === 0 ? "unlimited" : String(value);

const quotasJson = (k: ApiKeyInfo) => ({ max_bytes: k.maxBytes, max_active: k.maxActive });

const MAX_BYTES_HELP =
  "stored-bytes quota of the key's tenant: bytes, 0 = unlimited, default = QUOTA__MAX_BYTES";
const MAX_ACTIVE_HELP =
  "active-request quota of the key's tenant: 0 = unlimited, default = QUOTA__MAX_ACTIVE";

interface CreateOptions {
  name: string;
  scopes?: string;
  tenant?: string;
  maxBytes?: string;
  maxActive?: string;
  json?: boolean;
}

const when = (ms: number | null) => (ms == null ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z"));

export function registerKeysCommand(program: Command): void {
  const keys = program
    .command("keys")
    .description(
      "create, list, set quotas of and revoke API keys (Authorization: Bearer <key>, or signed requests)",
    );

  keys
    .command("create")
    .description("create a key and print it once (only its SHA-256 is stored)")
    .requiredOption("--name <name>", "what the key is for (shown by `keys list`)")
    .option(
      "--scopes <scopes>",
      `comma-separated, from ${SCOPES.join(", ")} (default ${DEFAULT_SCOPES.join(",")})`,
    )
    .option("--tenant <id>", "act as this tenant (e.g. key:<old id> to keep seeing an old key's requests)")
    .option("--max-bytes <n>", MAX_BYTES_HELP)
    .option("--max-active <n>", MAX_ACTIVE_HELP)
    .option("--json", 'print {"id","key","name","scopes","tenant","max_bytes","max_active"} only')
    .action(async (opts: CreateOptions) => {
      const name = opts.name.trim();
      if (!name) fail("--name must not be empty");
      let scopes: Scope[] = [...DEFAULT_SCOPES];
      if (opts.scopes !== undefined) {
        const parsed = parseScopes(opts.scopes);
        if (parsed.unknown.length)
          fail(`unknown scope ${parsed.unknown.join(", ")} (known: ${SCOPES.join(", ")})`);
        if (!parsed.scopes.length) fail(`--scopes is empty (known: ${SCOPES.join(", ")})`);
        scopes = parsed.scopes;
      }
      const tenant = opts.tenant?.trim() || undefined;
      const maxBytes = quotaOption("--max-bytes", opts.maxBytes);
      const maxActive = quotaOption("--max-active", opts.maxActive);
      const made = await withDatabase((db, config) =>
        createApiKey(db, {
          name,
          scopes,
          tenant,
          now: Date.now(),
          secret: config.security.keyEncryptionSecret,
          maxBytes,
          maxActive,
        }),
      );
      if (opts.json) {
        console.log(
          JSON.stringify({
            id: made.id,
            key: made.key,
            name: made.name,
            scopes: made.scopes,
            tenant: made.tenant,
            ...quotasJson(made),
          }),
        );
        return;
      }
      console.log(
        `Created API key ${made.id} "${made.name}" (scopes: ${made.scopes.join(", ")}; tenant ${made.tenant}).`,
      );
      console.log("The key is shown only this once; store it now:\n");
      console.log(`  ${made.key}\n`);
      console.log("Use it as a bearer token:");
      const config = configOrFail();
      console.log(
        `  curl -H "Authorization: Bearer ${made.key}" ${apiBaseUrl(config)}${config.apiPrefix}/requests/<id>`,
      );
      console.log(
        "or sign requests with it (see docs/auth.md). Revoke with `proxytorrent keys revoke " +
          made.id +
          "`.",
      );
    });

  keys
    .command("list")
    .description("list keys (never the keys themselves)")
    .option("--all", "include revoked keys")
    .option("--json", "print a JSON array")
    .action(async (opts: { all?: boolean; json?: boolean }) => {
      const rows = await withDatabase((db) => listApiKeys(db, { includeRevoked: opts.all }));
      if (opts.json) {
        console.log(
          JSON.stringify(
            rows.map((r) => ({
              id: r.id,
              name: r.name,
              scopes: r.scopes,
              tenant: r.tenant,
              created_at: new Date(r.createdAt).toISOString(),
              last_used_at: r.lastUsedAt == null ? null : new Date(r.lastUsedAt).toISOString(),
              revoked_at: r.revokedAt == null ? null : new Date(r.revokedAt).toISOString(),
              ...quotasJson(r),
            })),
          ),
        );
        return;
      }
      if (!rows.length) {
        console.log(
          opts.all ? "No keys." : "No active keys. Create one with `proxytorrent keys create --name <name>`.",
        );
        return;
      }
      const table = [
        [
          "ID",
          "NAME",
          "SCOPES",
          "TENANT",
          "CREATED",
          "LAST USED",
          ...(opts.all ? ["REVOKED"] : []),
          "MAX BYTES",
          "MAX ACTIVE",
        ],
        ...rows.map((r) => [
          r.id,
          r.name,
          r.scopes.join(","),
          r.tenant,
          when(r.createdAt),
          when(r.lastUsedAt),
          ...(opts.all ? [when(r.revokedAt)] : []),
          quotaText(r.maxBytes, "QUOTA__MAX_BYTES"),
          quotaText(r.maxActive, "QUOTA__MAX_ACTIVE"),
        ]),
      ];
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      for (const row of table)
        console.log(
          row
            .map((cell, i) => cell.padEnd(widths[i]!))
            .join("  ")
            .trimEnd(),
        );
    });

  keys
    .command("set")
    .description("change a key's quotas; they apply to the next request made with it")
    .argument("<id>", "the key id shown by `keys list` (or the key itself)")
    .option("--max-bytes <n>", MAX_BYTES_HELP)
    .option("--max-active <n>", MAX_ACTIVE_HELP)
    .option("--json", 'print {"id","name","tenant","max_bytes","max_active"}')
    .action(async (arg: string, opts: { maxBytes?: string; maxActive?: string; json?: boolean }) => {
      const id = apiKeyId(arg.trim()) ?? arg.trim();
      const maxBytes = quotaOption("--max-bytes", opts.maxBytes);
      const maxActive = quotaOption("--max-active", opts.maxActive);
      if (maxBytes === undefined && maxActive === undefined)
        fail("nothing to set: give --max-bytes and/or --max-active (a number, 0 = unlimited, or default)");
      const key = await withDatabase((db) => setApiKeyQuotas(db, id, { maxBytes, maxActive }));
      if (!key) fail(`no key with id ${id}`, 1);
      if (opts.json) {
        console.log(JSON.stringify({ id: key.id, name: key.name, tenant: key.tenant, ...quotasJson(key) }));
        return;
      }
      console.log(
        `Key ${key.id} (tenant ${key.tenant}): max bytes ${quotaText(key.maxBytes, "QUOTA__MAX_BYTES")}, max active ${quotaText(key.maxActive, "QUOTA__MAX_ACTIVE")}.`,
      );
    });

  keys
    .command("revoke")
    .description(
      "revoke a key at once (every API process sees it on the next request) and cancel the requests it made",
    )
    .argument("<id>", "the key id shown by `keys list` (or the key itself)")
    .action(async (arg: string) => {
      // Accept the whole key too, but never echo it.
      const id = apiKeyId(arg.trim()) ?? arg.trim();
      const res = await withDatabase((db) => revokeApiKey(db, id, Date.now()));
      if (res.outcome === "missing") fail(`no key with id ${id}`, 1);
      console.log(res.outcome === "revoked" ? `Revoked key ${id}.` : `Key ${id} was already revoked.`);
      const n = res.cancelledRequests;
      console.log(
        `Cancelled ${n} request${n === 1 ? "" : "s"} made with it${n ? " (their torrents stop; content no other request needs is deleted)" : ""}.`,
      );
    });
}
