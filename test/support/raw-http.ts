/**
 * HTTP/1.x spoken over a raw TCP socket on loopback, for requests no HTTP client will send: no Host
 * header, HTTP/1.0, a declared Content-Length with no body, a 100 MB body pushed with backpressure.
 */
import { connect } from "node:net";

export interface RawAnswer {
  status: number;
  head: string;
  body: string;
  /** Body bytes the client managed to write before the answer (or the close) came. */
  sent: number;
}

/**
 * Send `head` then, if `body` is given, a body of that many bytes (as declared, or chunked)
 * until the server answers or closes. Resolves with the whole answer once the server closes.
 */
export function raw(
  port: number,
  head: string,
  body?: { bytes: number; chunked: boolean },
  /** Connect from this loopback address (default: the system's choice, 127.0.0.1). */
  localAddress?: string,
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const sock = connect({ port, host: "127.0.0.1", ...(localAddress ? { localAddress } : {}) });
    const chunks: Buffer[] = [];
    let answered = false;
    let sent = 0;
    const finish = () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const [h = "", ...rest] = text.split("\r\n\r\n");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(h)?.[1] ?? 0);
      resolve({ status, head: h, body: rest.join("\r\n\r\n"), sent });
    };
    sock.on("data", (d: Buffer) => {
      answered = true;
      chunks.push(d);
    });
    sock.on("close", finish);
    // A server that answers and closes while we still write resets the connection, and the reset
    // can discard its answer before we read it (RFC 9112 §9.6): then `status` is 0 and `sent` tells
    // how far we got. Every socket error ends on "close".
    sock.on("error", () => {});
    sock.write(head);
    if (!body) return;
    const block = Buffer.alloc(1024 * 1024, 0x61);
    const pump = () => {
      while (!answered && !sock.destroyed && sent < body.bytes) {
        const n = Math.min(block.length, body.bytes - sent);
        const piece = body.chunked
          ? Buffer.concat([Buffer.from(`${n.toString(16)}\r\n`), block.subarray(0, n), Buffer.from("\r\n")])
          : block.subarray(0, n);
        let more: boolean;
        try {
          more = sock.write(piece);
        } catch {
          return; // EPIPE: the server answered and closed; the answer is read on "close"
        }
        sent += n;
        if (!more) return void sock.once("drain", pump);
      }
      if (!answered && !sock.destroyed && body.chunked) sock.end("0\r\n\r\n");
    };
    pump();
  });
}
