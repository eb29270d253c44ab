/**
 * A hand-written HTTP/1.1 origin for keep-alive tests, on a loopback address: every connection
 * and every request on it is numbered, and a script decides, per request, what goes back on the
 * wire (or whether the connection is cut without an answer). node:http's server cannot do the
 * rude things these tests need: say `Connection: close` and keep the socket open, close an idle
 * connection the moment a second request arrives, or stay silent about its keep-alive timeout.
 */
import net from "node:net";

export interface RawRequest {
  /** 1 for the first connection accepted, 2 for the second... */
  conn: number;
  /** 1 for the first request on its connection, 2 for the second... */
  nth: number;
  method: string;
  target: string;
  headers: Record<string, string>;
  /** The address the client connected to (which of our listening addresses). */
  localAddress: string;
}

/** What to do with one request: raw bytes to send back, or cut the connection unanswered. */
export type RawAnswer = { send: string | Buffer; thenClose?: boolean } | { cut: true };

export interface RawOrigin {
  port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections that have closed so far (from either side). */
  readonly closed: number;
  requests: RawRequest[];
  close(): Promise<void>;
}

/** A 200 answer with a body and Content-Length; `headers` are added as given. */
export function ok(body: string, headers: Record<string, string> = {}): string {
  const lines = [
    "HTTP/1.1 200 OK",
    "Content-Type: text/plain",
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  return `${lines.join("\r\n")}\r\n\r\n${body}`;
}

/**
 * Listen on `hosts` (loopback addresses; all on the same port) and answer with `script`.
 * `idleCloseMs` closes a connection that has been idle (between requests) that long, without
 * saying so in any header, like a server with a short keep-alive timeout.
 */
export async function startRawOrigin(
  script: (req: RawRequest) => RawAnswer,
  opts: { hosts?: string[]; idleCloseMs?: number } = {},
): Promise<RawOrigin> {
  const hosts = opts.hosts ?? ["127.0.0.1"];
  for (const h of hosts) if (!h.startsWith("127.")) throw new Error(`raw origin: loopback only, not ${h}`);
  const requests: RawRequest[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  let closed = 0;

  const onConnection = (socket: net.Socket) => {
    const conn = ++connections;
    sockets.add(socket);
    socket.on("close", () => {
      closed++;
      sockets.delete(socket);
    });
    socket.on("error", () => socket.destroy());
    let idle: ReturnType<typeof setTimeout> | null = null;
    const armIdle = () => {
      if (opts.idleCloseMs !== undefined) idle = setTimeout(() => socket.end(), opts.idleCloseMs);
    };
    armIdle();
    let nth = 0;
    let buf = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      if (idle) clearTimeout(idle);
      idle = null;
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const [line = "", ...rest] = buf.subarray(0, end).toString("latin1").split("\r\n");
        const headers: Record<string, string> = {};
        for (const h of rest) {
          const i = h.indexOf(":");
          headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
        }
        const length = Number(headers["content-length"] ?? 0);
        if (buf.length < end + 4 + length) return;
        buf = buf.subarray(end + 4 + length);
        const [method = "", target = ""] = line.split(" ");
        const req: RawRequest = {
          conn,
          nth: ++nth,
          method,
          target,
          headers,
          localAddress: socket.localAddress ?? "",
        };
        requests.push(req);
        const answer = script(req);
        if ("cut" in answer) {
          socket.destroy();
          return;
        }
        socket.write(answer.send);
        if (answer.thenClose) {
          socket.end();
          return;
        }
        armIdle();
      }
    });
  };

  const servers: net.Server[] = [];
  let port = 0;
  for (const host of hosts) {
    const server = net.createServer(onConnection);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    port = (server.address() as net.AddressInfo).port;
    servers.push(server);
  }
  return {
    port,
    get connections() {
      return connections;
    },
    get closed() {
      return closed;
    },
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    },
  };
}
