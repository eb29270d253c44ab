/**
 * The egress a job needs belongs to the job (issue 10, item 13): a request made while the service
 * fetched through a proxy is only ever fetched through a proxy, even after a restart without one.
 * Real service process, real SOCKS5 proxy (microsocks), a loopback origin that counts requests
 * and can hold its answer until the test lets it go.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type Origin, type Route, startOrigin } from "../support/origin";
import { Service } from "../support/service";
import { type Microsocks, startMicrosocks } from "../support/socks";

let origin: Origin;
let socks: Microsocks;
let svc: Service | null = null;
let release: () => void = () => {};
const gate = new Promise<void>((r) => {
  release = r;
});
const held: Route = async (_req, res) => {
  await gate;
  res.writeHead(200, { "content-type": "text/plain", "content-length": "6" });
  res.end("pstoff");
};

beforeAll(async () => {
  origin = await startOrigin({ "/doc": held });
  socks = await startMicrosocks();
});
afterAll(async () => {
  release();
  await svc?.stop();
  await socks?.stop();
  await origin?.close();
});

async function until<T>(what: string, probe: () => Promise<T | null> | T | null, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${svc?.output.slice(-3000)}`);
    await Bun.sleep(50);
  }
}

test("given a job queued under a proxy, a restart without the proxy never fetches it directly; with the proxy it completes", async () => {
  // 1. Through the proxy: the fetch starts (the origin holds its answer), then the service stops.
  svc = await Service.start({ env: { PROXY__PROXY_URL: socks.url("socks5"), NODE__LEASE_SECONDS: "5" } });
  const id = await svc.create({ url: origin.url("/doc") });
  await until("the proxied fetch to reach the origin", () => (origin.count("/doc") === 1 ? true : null));
  expect(socks.connectedTo(origin.port)).toBe(1);
  await svc.stop(); // SIGTERM hands the job back to the queue

  // 2. Same data, no proxy: the node must not take the job, and the status says why it waits.
  delete svc.env.PROXY__PROXY_URL;
  await svc.launch();
  const waiting = await until("the status to say it waits for a proxy", async () => {
    if (origin.count("/doc") > 1) throw new Error("the origin saw a request made without the proxy");
    const st = await svc!.status(id);
    return st.status === "queued" && /Waiting for a node with a proxy/.test(st.error_message ?? "")
      ? st
      : null;
  });
  expect(waiting.progress).toBe(0);
  expect(origin.count("/doc")).toBe(1);
  // and the node says how many jobs wait for a node with a proxy
  expect(svc.logs().some((l) => l.jobs === 1)).toBe(true);
  await svc.stop();
  expect(origin.count("/doc")).toBe(1);

  // 3. With the proxy again: the job completes, and every request the origin saw crossed the proxy.
  svc.env.PROXY__PROXY_URL = socks.url("socks5");
  release();
  await svc.launch();
  const done = await svc.waitFor(id);
  expect(done.status).toBe("ready");
  expect(done.error_message).toBeNull();
  expect(origin.count("/doc")).toBe(socks.connectedTo(origin.port));
  expect(origin.count("/doc")).toBeGreaterThanOrEqual(2);
});
