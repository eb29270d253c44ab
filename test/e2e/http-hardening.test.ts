/**
 * The HTTP servers of the real service process, spoken to over raw TCP on loopback:
 *
 * - a request without a usable Host (HTTP/1.0 with none, or an invalid one) is a short 400, never
 *   Bun's development error page with source lines and file paths, on the API port, the separate
 *   node port (tracker, web seed) and the API-only process;
 * - bodies far over SECURITY__MAX_BODY_BYTES, declared or chunked, with or without a garbage
 *   Signature, are refused without being held in memory: four parallel 100 MB POSTs leave the
 *   process's peak RSS far below their size.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { guarded, serveOptions } from "../../seeder/process/http-server";
import { loadConfig } from "../../src/config";
import { silentLogger } from "../../src/log";
import { freePort, removeTmpDirs } from "../support/clients";
import { type RawAnswer, raw } from "../support/raw-http";
import { Service } from "../support/service";

let svc: Service;
let api: Service;
let nodePort: number;

beforeAll(async () => {
  nodePort = await freePort();
  svc = await Service.start({ nodeHttpPort: nodePort });
  api = await Service.start({ command: "api" });
}, 120_000);
afterAll(async () => {
  await svc?.stop();
  await api?.stop();
  await removeTmpDirs();
});

/** Peak resident memory of a process since the last reset, and a reset (Linux /proc). */
const procStatus = (pid: number, field: string) =>
  Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) *
  1024;
const resetPeak = (pid: number) => writeFileSync(`/proc/${pid}/clear_refs`, "5");

const noLeak = (a: RawAnswer) => {
  const all = `${a.head}\r\n\r\n${a.body}`;
  expect(a.body.length).toBeLessThan(300);
  expect(all).not.toContain("<html");
  expect(all).not.toContain("/work");
  expect(all).not.toContain(".ts");
  expect(all).not.toMatch(/new URL|at fetch|TypeError/);
};

describe("no Host, bad Host: 400, never Bun's error page", () => {
  test("HTTP/1.0 without Host on the API port, the node port and the API-only process", async () => {
    for (const port of [svc.port, nodePort, api.port]) {
      for (const path of ["/v1/health", "/announce", "/metrics", "/"]) {
        const a = await raw(port, `GET ${path} HTTP/1.0\r\n\r\n`);
        expect(a.status).toBe(400);
        expect(a.head.toLowerCase()).toContain("content-type: application/json");
        expect(JSON.parse(a.body)).toEqual({ detail: "Missing or invalid Host header" });
        noLeak(a);
      }
    }
  });

  test("an empty or invalid Host over HTTP/1.1 is 400 too", async () => {
    for (const host of ["", "bad host", "example.test:99999"]) {
      const a = await raw(svc.port, `GET /v1/health HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect(a.status).toBe(400);
      noLeak(a);
    }
  });
});

describe("an uncaught error in a handler", () => {
  test("is a short JSON 500 from our error handler, whatever NODE_ENV says", async () => {
    const logged: Record<string, unknown>[] = [];
    const log = {
      ...silentLogger,
      error: (_msg: string, fields?: Record<string, unknown>) => void logged.push(fields ?? {}),
    };
    const server = Bun.serve({
      ...serveOptions(loadConfig({}), log),
      hostname: "127.0.0.1",
      port: 0,
      fetch: guarded(loadConfig({}), () => {
        throw new Error("boom in /some/secret/path.ts");
      }),
    });
    try {
      const a = await raw(server.port!, "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
      expect(a.status).toBe(500);
      expect(JSON.parse(a.body)).toEqual({ detail: "Internal server error" });
      noLeak(a);
      expect(a.body).not.toContain("boom");
      // one error line, with the error for the operator (only the client's answer stays short)
      expect(logged.map((f) => f.err)).toEqual(["boom in /some/secret/path.ts"]);
    } finally {
      server.stop(true);
    }
  });
});

describe("bodies over SECURITY__MAX_BODY_BYTES are refused while reading", () => {
  const HUNDRED_MB = 100 * 1024 * 1024;
  const post = (port: number, path: string, chunked: boolean, extra = "") =>
    raw(
      port,
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\n` +
        `${chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${HUNDRED_MB}`}\r\n${extra}Connection: close\r\n\r\n`,
      { bytes: HUNDRED_MB, chunked },
    );
  const garbageSignature =
    'Signature-Input: pt=("@method" "@path" "@query" "content-digest");created=1;nonce="n";keyid="0000000000000000"\r\n' +
    "Signature: pt=:AAAA:\r\nContent-Digest: sha-256=:AAAA:\r\n";

  test("four parallel 100 MB POSTs with a garbage Signature: 413/401, peak RSS grows far less than 400 MB", async () => {
    const pid = svc.proc!.pid;
    resetPeak(pid);
    const before = procStatus(pid, "VmRSS");
    const answers = await Promise.all([
      post(svc.port, "/v1/requests", true, garbageSignature),
      post(svc.port, "/v1/requests", true, garbageSignature),
      post(svc.port, "/v1/requests", false, garbageSignature),
      post(svc.port, "/v1/requests", false, garbageSignature),
    ]);
    const growth = procStatus(pid, "VmHWM") - before;
    console.log(
      `4 x 100 MB POSTs: peak RSS growth ${(growth / 1048576).toFixed(1)} MiB; statuses ${answers.map((a) => a.status).join(",")}; ` +
        `body MiB written before the answer: ${answers.map((a) => (a.sent / 1048576).toFixed(0)).join(",")}`,
    );
    // Each is refused (413, or 401 for a signature) or cut off by the server long before its end.
    for (const a of answers) {
      if (a.status === 0) expect(a.sent).toBeLessThan(HUNDRED_MB);
      else expect([401, 413]).toContain(a.status);
    }
    expect(growth).toBeLessThan(64 * 1024 * 1024);
    // The service is still fine.
    expect((await fetch(`${svc.url}/v1/health`)).status).toBeLessThan(600);
  }, 120_000);

  test("a declared body over the limit is 413 before a byte of it is sent, on the node port and the API port", async () => {
    const declare = (port: number, path: string, bytes: number) =>
      raw(
        port,
        `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${bytes}\r\nConnection: close\r\n\r\n`,
      );
    for (const path of ["/announce", "/webseed/" + "0".repeat(64), "/metrics"])
      expect((await declare(nodePort, path, HUNDRED_MB)).status).toBe(413);
    // Just over the limit: our JSON answer (far over it, Bun's own backstop answers a bare 413).
    const a = await declare(svc.port, "/v1/requests", 2 * 1024 * 1024 + 1);
    expect(a.status).toBe(413);
    expect(JSON.parse(a.body).detail).toContain("SECURITY__MAX_BODY_BYTES");
  }, 60_000);

  test("a chunked body just over the limit gets the JSON 413 naming the setting", async () => {
    const a = await raw(
      svc.port,
      `POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
      { bytes: 2 * 1024 * 1024 + 1, chunked: true },
    );
    expect(a.status).toBe(413);
    expect(a.body).toContain("SECURITY__MAX_BODY_BYTES");
  }, 60_000);
});
