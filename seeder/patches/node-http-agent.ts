/**
 * Which idle sockets node:http's keep-alive Agent may hand to a request.
 *
 * The fetcher's KeepAlivePool (seeder/node/fetcher/keepalive.ts) must decide which idle connection
 * a request may ride: never one that a lease still holds, and none at all for a request that brings
 * its own fresh connection. node:http has no option or hook for that choice: `Agent#addRequest`
 * (an undocumented method of Node's _http_agent.js, which Bun ships unchanged) takes the first
 * usable socket of `this.freeSockets[this.getName(options)]`, synchronously. So the pool overrides
 * `addRequest` and, for the length of that one synchronous call to the original, lets
 * `freeSockets[name]` list only the sockets the request may take (`addRequestAmong`).
 *
 * Written against node:http as Bun 1.4.5 ships it (Node's _http_agent.js). If `addRequest` stops
 * choosing from `freeSockets[name]` (renamed, made asynchronous, moved to a private field), a
 * request could take a socket another request still holds: `requireAgentPatch()` refuses to build
 * a pool then (docs/patches.md).
 */
import http from "node:http";
import type { Duplex } from "node:stream";
import { type LibraryPatch, requirePatch } from "./patch";

type AddRequest = (req: http.ClientRequest, options: Record<string, unknown>, ...rest: unknown[]) => void;

export const agentAddRequestPatch: LibraryPatch = {
  name: "node-http-agent-add-request",
  why: "the fetcher's keep-alive pool chooses which idle socket a request may take (never a held one)",
  writtenFor: { bun: "1.4.5" },
  // node:http is part of the runtime: its version is Bun's.
  installedVersion: (pkg) => (pkg === "bun" ? (process.versions.bun ?? "not Bun") : "unknown"),
  check() {
    const addRequest = (http.Agent.prototype as unknown as { addRequest?: unknown }).addRequest;
    if (typeof addRequest !== "function") return "node:http Agent has no addRequest";
    const source = String(addRequest);
    if (!/this\.getName\(/.test(source) || !/this\.freeSockets\[name\]/.test(source))
      return "Agent#addRequest no longer picks idle sockets from this.freeSockets[this.getName(options)]";
    return null;
  },
};

/** Throw LibraryPatchError unless Agent#addRequest still works the way `addRequestAmong` needs. */
export function requireAgentPatch(): void {
  requirePatch(agentAddRequestPatch);
}

/**
 * Call node:http's own `addRequest` for `req` while `freeSockets[name]` lists only `takeable`;
 * the other idle sockets are put back afterwards, behind any socket node:http left there.
 */
export function addRequestAmong(
  agent: http.Agent,
  name: string,
  takeable: (idle: Duplex[]) => Duplex[],
  req: http.ClientRequest,
  options: Record<string, unknown>,
  rest: unknown[],
): void {
  const base = http.Agent.prototype as unknown as { addRequest: AddRequest };
  const free = agent.freeSockets as Record<string, Duplex[] | undefined>;
  const idle = free[name] ?? [];
  const allowed = takeable(idle);
  const hidden = idle.filter((s) => !allowed.includes(s));
  if (allowed.length) free[name] = allowed;
  else delete free[name];
  try {
    base.addRequest.call(agent, req, options, ...rest);
  } finally {
    const left = [...hidden, ...(free[name] ?? [])];
    if (left.length) free[name] = left;
    else delete free[name];
  }
}
