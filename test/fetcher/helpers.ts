/**
 * Wiring for fetcher tests: a temp content store, a config from env-style settings, and a
 * resolver and dialler that keep every packet on loopback.
 *
 * The dialler is the heart of the "honest" SSRF tests: it lets the egress guard judge a real
 * public address (STAND_IN_PUBLIC) while the bytes go to a loopback server, and it refuses to
 * dial anything else that is not loopback, so a guard bug can never send traffic off the machine.
 */
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContentStore } from "../../seeder/node/cas";
import { createFetcher, type Dial, type Fetcher, type FetcherDeps } from "../../seeder/node/fetcher";
import { defaultDial } from "../../seeder/node/fetcher/connect";
import { type Config, type Env, loadConfig } from "../../src/config";

/** A public unicast address that is never dialled: the test dialler routes it to a loopback port. */
export const STAND_IN_PUBLIC = "5.45.0.10";
export const STAND_IN_PUBLIC_2 = "5.45.0.11";

function isLoopbackLiteral(host: string): boolean {
  return net.isIPv4(host) ? host.startsWith("127.") : host === "::1";
}

export interface LoopbackDialer {
  dial: Dial;
  /** Every dial attempt, as the fetcher asked for it (before re-routing). */
  calls: { host: string; port: number }[];
}

/**
 * Dial loopback addresses as asked; dial `routes[address]` (a loopback port) for a stand-in
 * public address; refuse everything else without touching the network.
 */
export function loopbackDialer(routes: Record<string, number> = {}): LoopbackDialer {
  const calls: { host: string; port: number }[] = [];
  const dial: Dial = (host, port, signal) => {
    calls.push({ host, port });
    const mapped = routes[host];
    if (mapped !== undefined) return defaultDial("127.0.0.1", mapped, signal);
    if (isLoopbackLiteral(host) || host === "localhost") return defaultDial(host, port, signal);
    return Promise.reject(
      Object.assign(new Error(`test dialler: refusing ${host}`), { code: "EHOSTUNREACH" }),
    );
  };
  return { dial, calls };
}

/** A resolver from a fixed table; unknown names fail like NXDOMAIN (no real DNS, ever). */
export function mapResolver(table: Record<string, string[]>) {
  const calls: string[] = [];
  const resolve = async (host: string) => {
    calls.push(host);
    const hit = table[host];
    if (!hit) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
    return hit;
  };
  return { resolve, calls };
}

export interface Harness {
  fetcher: Fetcher;
  store: ContentStore;
  config: Config;
  dir: string;
  cleanup(): Promise<void>;
}

/** A fetcher over a fresh store; `env` is in the service's variable names. */
export async function harness(
  env: Env = {},
  deps: Omit<FetcherDeps, "config" | "store"> = {},
): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), "pt-fetch-"));
  const config = loadConfig({ STORAGE__BASE_PATH: dir, ...env });
  const store = new ContentStore(dir);
  await store.init();
  return {
    fetcher: createFetcher({ config, store, ...deps }),
    store,
    config,
    dir,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Run a fetch expected to fail; return the error (fails the test if it succeeds). */
export async function fetchError(
  h: Harness,
  url: string,
  extra: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | null;
    signal?: AbortSignal;
    onProgress?: (bytes: number) => void;
  } = {},
): Promise<import("../../seeder/node/fetcher").FetchError> {
  try {
    const r = await h.fetcher.fetch(
      { url, method: extra.method ?? "GET", headers: extra.headers ?? {}, body: extra.body ?? null },
      { signal: extra.signal ?? new AbortController().signal, onProgress: extra.onProgress },
    );
    throw new Error(`expected the fetch to fail, got ${JSON.stringify(r)}`);
  } catch (e) {
    if ((e as Error).name !== "FetchError") throw e;
    return e as import("../../seeder/node/fetcher").FetchError;
  }
}

export function get(h: Harness, url: string, headers: Record<string, string> = {}, signal?: AbortSignal) {
  return h.fetcher.fetch({ url, method: "GET", headers }, { signal: signal ?? new AbortController().signal });
}
