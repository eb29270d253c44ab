/**
 * Client helper: sign a request to the ProxyTorrent API with an API key (RFC 9421, hmac-sha256).
 * Web standards only, so it runs in Bun, Node 20, Deno, Workers and browsers.
 *
 *   import { signRequest } from "proxytorrent/src/auth/sign";
 *   const req = await signRequest(process.env.PT_KEY!, new Request("http://127.0.0.1:8000/v1/requests", {
 *     method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ url }),
 *   }));
 *   const res = await fetch(req);
 *
 * Each call makes a fresh nonce, so a signed request can be sent exactly once, within
 * SECURITY__SIGNATURE_WINDOW_SECONDS (300 s) of `created`.
 */
import { hmacSha256, randomHex, sha256, toBase64 } from "./crypto";
import { apiKeyId } from "./key-format";
import { contentDigest, REQUIRED_COMPONENTS, SIGNATURE_ALG, signatureBase } from "./message-signature";
import { type InnerList, serializeInnerList } from "./structured-fields";

export interface SignOptions {
  /** Seconds since the epoch; default now. */
  created?: number;
  /** Default: 32 random hex characters. */
  nonce?: string;
  /** Signature label; default "pt". */
  label?: string;
}

export interface SignatureInput {
  method: string;
  url: string | URL;
  body?: Uint8Array | string | null;
  headers?: HeadersInit;
}

/** The three headers to add: Content-Digest, Signature-Input and Signature. */
export async function signatureHeaders(
  key: string,
  input: SignatureInput,
  opts: SignOptions = {},
): Promise<Record<string, string>> {
  const keyId = apiKeyId(key);
  if (!keyId) throw new Error("not a ProxyTorrent API key (expected pt_<id>_<secret>)");
  const digest = await contentDigest(input.body ?? "");
  const headers = new Headers(input.headers);
  headers.set("content-digest", digest);
  const params: InnerList = {
    items: REQUIRED_COMPONENTS.map((c) => ({ value: c, params: [] })),
    params: [
      ["created", opts.created ?? Math.floor(Date.now() / 1000)],
      ["nonce", opts.nonce ?? randomHex(16)],
      ["keyid", keyId],
      ["alg", SIGNATURE_ALG],
    ],
  };
  const base = signatureBase(params, { method: input.method, url: String(input.url), headers });
  if (base === null) throw new Error("cannot build the signature base for this request");
  // HMAC keyed by SHA-256(key) is HMAC keyed by the key itself (see key-format.ts).
  const mac = await hmacSha256(await sha256(key), base);
  const label = opts.label ?? "pt";
  return {
    "Content-Digest": digest,
    "Signature-Input": `${label}=${serializeInnerList(params)}`,
    Signature: `${label}=:${toBase64(mac)}:`,
  };
}

/**
 * A copy of `req` carrying a signature (the body is read once and sent as given).
 * @public For clients (README, docs/auth.md); nothing in this repository calls it.
 */
export async function signRequest(key: string, req: Request, opts: SignOptions = {}): Promise<Request> {
  const body = req.body ? new Uint8Array(await req.arrayBuffer()) : null;
  const extra = await signatureHeaders(key, { method: req.method, url: req.url, body }, opts);
  const headers = new Headers(req.headers);
  for (const [k, v] of Object.entries(extra)) headers.set(k, v);
  return new Request(req.url, {
    method: req.method,
    headers,
    body: body as BodyInit | null,
    redirect: req.redirect,
    signal: req.signal,
  });
}
