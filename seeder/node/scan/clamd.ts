/**
 * A clamd client: zVERSION and zINSTREAM over its unix socket or TCP port. The protocol is a few
 * lines (a NUL-terminated command, then the body as chunks each prefixed by its 4-byte big-endian
 * length, a zero-length chunk to end it, and one NUL-terminated reply), so it is written here
 * rather than pulled in: the npm clients wrap the clamscan binary as well and bring their own
 * stream and timeout handling we would have to work around.
 */
import { createReadStream } from "node:fs";
import { connect, type Socket } from "node:net";

/** clamd could not give a verdict: not running, refused, timed out, or answered an error. */
export class ClamdUnavailable extends Error {
  constructor(
    message: string,
    /** The body is larger than clamd's StreamMaxLength (it said so): a retry cannot help. */
    readonly tooLarge = false,
  ) {
    super(message);
  }
}

export type ClamdVerdict = { infected: false } | { infected: true; signature: string };

/** Where clamd listens: a unix socket path, or `host:port` (`[::1]:3310` for IPv6). */
export type ClamdAddress = { path: string } | { host: string; port: number };

export function parseClamdAddress(raw: string): ClamdAddress {
  const m = /^\[?([^[\]]+?)\]?:(\d{1,5})$/.exec(raw);
  if (!raw.startsWith("/") && m) return { host: m[1]!, port: Number(m[2]) };
  return { path: raw };
}

/** Bytes read from the blob and sent per INSTREAM chunk. */
const CHUNK = 1 << 20;

export class ClamdClient {
  private readonly address: ClamdAddress;

  constructor(
    address: string,
    private readonly timeoutMs: number,
  ) {
    this.address = parseClamdAddress(address);
  }

  /** `ClamAV 1.4.6/27000/Sun Nov 29 08:24:02 2026`: engine, then signature version and date. */
  async version(signal?: AbortSignal): Promise<string> {
    return this.exchange("zVERSION", async () => {}, signal);
  }

  /** Stream a file to clamd and return its verdict. */
  async scanFile(path: string, signal?: AbortSignal): Promise<ClamdVerdict> {
    const reply = await this.exchange(
      "zINSTREAM",
      async (sock) => {
        const header = Buffer.alloc(4);
        for await (const chunk of createReadStream(path, { highWaterMark: CHUNK })) {
          if (sock.destroyed) return; // answered (or failed) already
          const buf = chunk as Buffer;
          header.writeUInt32BE(buf.length, 0);
          sock.write(Buffer.from(header));
          if (!sock.write(buf)) await drained(sock);
        }
        sock.write(Buffer.alloc(4)); // zero length: end of stream
      },
      signal,
    );
    // "stream: OK", "stream: <signature> FOUND", or "<what went wrong> ERROR".
    if (reply === "stream: OK") return { infected: false };
    const found = /^stream: (.+) FOUND$/.exec(reply);
    if (found) return { infected: true, signature: found[1]! };
    throw new ClamdUnavailable(`clamd answered: ${reply}`, /size limit exceeded/i.test(reply));
  }

  /** Send one command, let `send` write what follows it, and read the NUL-terminated reply. */
  private exchange(command: string, send: (sock: Socket) => Promise<void>, signal?: AbortSignal) {
    return new Promise<string>((resolve, reject) => {
      const sock = connect(this.address);
      const chunks: Buffer[] = [];
      let settled = false;
      const finish = (error: Error | null, reply?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        sock.destroy();
        if (error) reject(error);
        else resolve(reply!);
      };
      const timer = setTimeout(
        () => finish(new ClamdUnavailable(`clamd gave no verdict within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      const onAbort = () => finish(signal!.reason ?? new Error("aborted"));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      sock.on("error", (e: NodeJS.ErrnoException) =>
        finish(new ClamdUnavailable(`clamd cannot be reached: ${e.code ?? e.message}`)),
      );
      sock.on("data", (d: Buffer) => {
        chunks.push(d);
        const all = Buffer.concat(chunks);
        const nul = all.indexOf(0);
        // clamd may answer before the body ends (size limit): the reply wins over the rest.
        if (nul >= 0) finish(null, all.subarray(0, nul).toString("utf8").trim());
      });
      sock.on("close", () => finish(new ClamdUnavailable("clamd closed the connection without a verdict")));
      sock.on("connect", () => {
        sock.write(`${command}\0`);
        send(sock).catch((e) =>
          finish(new ClamdUnavailable(`sending the body to clamd failed: ${(e as Error).message}`)),
        );
      });
    });
  }
}

function drained(sock: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (sock.destroyed) return reject(new Error("connection closed"));
    const done = () => {
      sock.off("drain", done);
      sock.off("close", closed);
      resolve();
    };
    const closed = () => {
      sock.off("drain", done);
      reject(new Error("connection closed"));
    };
    sock.once("drain", done);
    sock.once("close", closed);
  });
}
