/**
 * The clamd client against stand-in clamd servers this test runs on unix sockets (the real clamd is
 * in test/e2e/virus-scan.test.ts): what it sends (INSTREAM framing), the replies it understands,
 * and that a clamd which never answers, closes early or answers an error gives ClamdUnavailable
 * within SCAN__TIMEOUT_MS instead of hanging the job.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { ClamdClient, ClamdUnavailable, parseClamdAddress } from "../../seeder/node/scan/clamd";
import { removeTmpDirs, tmpDir } from "../support/clients";

const servers: Server[] = [];
afterAll(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
  await removeTmpDirs();
});

/** A stand-in clamd: `onData` sees everything received so far on each connection. */
async function fakeClamd(onData: (received: Buffer, sock: Socket) => void): Promise<string> {
  const path = join(await tmpDir("pt-fake-clamd-"), "clamd.sock");
  const server = createServer((sock) => {
    let got = Buffer.alloc(0);
    sock.on("data", (d: Buffer) => {
      got = Buffer.concat([got, d]);
      onData(got, sock);
    });
    sock.on("error", () => {});
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return path;
}

/** The chunks of an INSTREAM request, once its zero-length terminator has arrived (else null). */
function instreamChunks(received: Buffer): Buffer[] | null {
  const cmd = Buffer.from("zINSTREAM\0");
  if (!received.subarray(0, cmd.length).equals(cmd)) return null;
  const chunks: Buffer[] = [];
  let at = cmd.length;
  while (at + 4 <= received.length) {
    const n = received.readUInt32BE(at);
    if (n === 0) return chunks;
    if (at + 4 + n > received.length) return null;
    chunks.push(received.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return null;
}

async function bodyFile(bytes: number): Promise<{ path: string; data: Buffer }> {
  const data = Buffer.alloc(bytes, 7);
  const path = join(await tmpDir("pt-clamd-body-"), "body.bin");
  await writeFile(path, data);
  return { path, data };
}

describe("clamd client", () => {
  test("INSTREAM: the body in length-prefixed chunks, a zero terminator; OK and FOUND are understood", async () => {
    let seen: Buffer | null = null;
    let answer = "stream: OK";
    const path = await fakeClamd((got, sock) => {
      const chunks = instreamChunks(got);
      if (!chunks) return;
      seen = Buffer.concat(chunks);
      sock.end(`${answer}\0`);
    });
    const { path: file, data } = await bodyFile(3 * 1024 * 1024 + 5);
    const client = new ClamdClient(path, 10_000);
    expect(await client.scanFile(file)).toEqual({ infected: false });
    expect(seen!.equals(data)).toBe(true);
    answer = "stream: Some.Signature-1 FOUND";
    expect(await client.scanFile(file)).toEqual({ infected: true, signature: "Some.Signature-1" });
  });

  test("a clamd that never answers: ClamdUnavailable after the timeout", async () => {
    const path = await fakeClamd(() => {});
    const { path: file } = await bodyFile(1000);
    const err = await new ClamdClient(path, 300).scanFile(file).catch((e) => e);
    expect(err).toBeInstanceOf(ClamdUnavailable);
    expect(err.message).toBe("clamd gave no verdict within 300 ms");
  });

  test("an error reply and a size-limit reply are ClamdUnavailable; the size limit is marked too large", async () => {
    const path = await fakeClamd((_got, sock) => sock.end("INSTREAM size limit exceeded. ERROR\0"));
    const { path: file } = await bodyFile(4 * 1024 * 1024);
    const err = await new ClamdClient(path, 10_000).scanFile(file).catch((e) => e);
    expect(err).toBeInstanceOf(ClamdUnavailable);
    expect(err.tooLarge).toBe(true);
    const path2 = await fakeClamd((got, sock) => {
      if (instreamChunks(got)) sock.end("Can't allocate memory ERROR\0");
    });
    const err2 = await new ClamdClient(path2, 10_000).scanFile(file).catch((e) => e);
    expect(err2).toBeInstanceOf(ClamdUnavailable);
    expect(err2.tooLarge).toBe(false);
    expect(err2.message).toContain("Can't allocate memory");
  });

  test("a clamd that closes without a verdict, and a socket nobody listens on", async () => {
    const path = await fakeClamd((_got, sock) => sock.destroy());
    const { path: file } = await bodyFile(1000);
    expect(await new ClamdClient(path, 10_000).scanFile(file).catch((e) => e)).toBeInstanceOf(
      ClamdUnavailable,
    );
    const nobody = join(await tmpDir("pt-no-clamd-"), "none.sock");
    const err = await new ClamdClient(nobody, 10_000).version().catch((e) => e);
    expect(err).toBeInstanceOf(ClamdUnavailable);
    expect(err.message).not.toContain(nobody);
  });

  test("VERSION, and SCAN__CLAMD as a socket path or host:port", async () => {
    const path = await fakeClamd((got, sock) => {
      if (got.toString() === "zVERSION\0") sock.end("ClamAV 1.4.6/27836/Sat Nov 28 08:24:02 2026\0");
    });
    expect(await new ClamdClient(path, 10_000).version()).toBe("ClamAV 1.4.6/27836/Sat Nov 28 08:24:02 2026");
    expect(parseClamdAddress("/run/clamav/clamd.ctl")).toEqual({ path: "/run/clamav/clamd.ctl" });
    expect(parseClamdAddress("127.0.0.1:3310")).toEqual({ host: "127.0.0.1", port: 3310 });
    expect(parseClamdAddress("[::1]:3310")).toEqual({ host: "::1", port: 3310 });
  });
});
