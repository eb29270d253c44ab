/**
 * A minimal HTTP CONNECT proxy for tests (no Debian package offers one that is quick to start):
 * optional Basic credentials, a log of every CONNECT line, and tunnels to loopback targets only
 * (anything else is answered 403 without dialling), so a test can never leave the machine.
 */
import net from "node:net";
import tls from "node:tls";

export interface ConnectProxy {
  port: number;
  /** Request lines received, e.g. `CONNECT 127.0.0.1:41234 HTTP/1.1`. */
  lines: string[];
  /** Tunnels actually opened. */
  tunnels: number;
  url(): string;
  close(): Promise<void>;
}

export async function startConnectProxy(
  auth?: { user: string; password: string },
  /** Speak TLS to clients (an `https` proxy) with this certificate and key. */
  serverTls?: { cert: string; key: string },
): Promise<ConnectProxy> {
  const lines: string[] = [];
  const sockets = new Set<net.Socket>();
  let tunnels = 0;
  const onClient = (client: net.Socket) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => client.destroy());
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      client.off("data", onData);
      const head = buf.subarray(0, end).toString("latin1").split("\r\n");
      const line = head[0] ?? "";
      lines.push(line);
      const m = /^CONNECT (\[[^\]]+\]|[^:\s]+):(\d+) HTTP\/1\.[01]$/.exec(line);
      if (!m) return void client.end("HTTP/1.1 400 Bad Request\r\n\r\n");
      if (auth) {
        const expected = `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString("base64")}`;
        const given = head.find((h) => h.toLowerCase().startsWith("proxy-authorization:"));
        if (given?.slice(given.indexOf(":") + 1).trim() !== expected)
          return void client.end("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
      }
      const host = m[1]!.replace(/^\[|\]$/g, "");
      const loopback = net.isIPv4(host) ? host.startsWith("127.") : host === "::1";
      if (!loopback) return void client.end("HTTP/1.1 403 Forbidden\r\n\r\n");
      const upstream = net.connect({ host, port: Number(m[2]) });
      sockets.add(upstream);
      upstream.on("close", () => sockets.delete(upstream));
      upstream.once("connect", () => {
        tunnels++;
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        const rest = buf.subarray(end + 4);
        if (rest.length) upstream.write(rest);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.once("error", () => client.end("HTTP/1.1 502 Bad Gateway\r\n\r\n"));
    };
    client.on("data", onData);
  };
  const server = serverTls ? tls.createServer(serverTls, onClient) : net.createServer(onClient);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    lines,
    get tunnels() {
      return tunnels;
    },
    url: () => {
      const scheme = serverTls ? "https" : "http";
      return auth
        ? `${scheme}://${encodeURIComponent(auth.user)}:${encodeURIComponent(auth.password)}@127.0.0.1:${port}`
        : `${scheme}://127.0.0.1:${port}`;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
