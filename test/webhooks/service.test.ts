/**
 * Webhooks from the real service (`bin/proxytorrent serve`, a child process) to real receivers on
 * loopback: the event a caller waits for arrives signed and right; a failing receiver still gets
 * it; and a node SIGKILLed while a receiver holds the request open delivers it after restarting.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Webhook } from "standardwebhooks";
import { generateSecret } from "../../src/webhooks/signing";
import { bytesRoute, type Origin, stallRoute, startOrigin } from "../support/origin";
import { Service } from "../support/service";
import { type Receiver, startReceiver, until } from "./receiver";

const SECRET = generateSecret();
const wh = new Webhook(SECRET);
const file = bytesRoute({ size: 300_000, seed: 61, contentType: "text/plain" });
const other = bytesRoute({ size: 100_000, seed: 62, contentType: "text/plain" });
const third = bytesRoute({ size: 50_000, seed: 63, contentType: "text/plain" });

let origin: Origin;
let svc: Service;
const receivers: Receiver[] = [];

async function receiver() {
  const r = await startReceiver();
  receivers.push(r);
  return r;
}

beforeAll(async () => {
  origin = await startOrigin({
    "/report.txt": file,
    "/other.txt": other,
    "/third.txt": third,
    "/slow": stallRoute(),
  });
  svc = await Service.start({
    env: { WEBHOOK__SECRET: SECRET, WEBHOOK__RETRY_DELAYS: "1,1,1", WEBHOOK__TIMEOUT: "3" },
  });
});
afterAll(async () => {
  await svc?.stop();
  await origin?.close();
  for (const r of receivers) await r.close();
});

/** The request's only delivery, once its status is `status` (read through the API). */
async function deliveryOnce(id: string, status: string): Promise<any> {
  let d: any;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const res = await svc.api(`/v1/requests/${id}/webhooks`);
    d = ((await res.json()) as { deliveries: any[] }).deliveries[0];
    if (d?.status === status) return d;
    await Bun.sleep(50);
  }
  throw new Error(`delivery of ${id} is ${JSON.stringify(d)}, expected ${status}`);
}

async function post(body: Record<string, unknown>) {
  const res = await svc.api("/v1/requests", { method: "POST", body: JSON.stringify(body) });
  expect(res.status).toBe(201);
  return { id: ((await res.json()) as { id: string }).id, requestId: res.headers.get("x-request-id") };
}

describe("callback_url, end to end", () => {
  test("the request becomes ready and the receiver gets a verified request.ready with hash and magnet", async () => {
    const rx = await receiver();
    const { id, requestId } = await post({ url: origin.url("/report.txt"), callback_url: rx.url });
    const st = await svc.waitFor(id);
    expect(st.status).toBe("ready");
    const [got] = await rx.waitFor(1);
    const event = wh.verify(got!.body, got!.headers) as any;
    const magnet = (await (await svc.api(`/v1/requests/${id}/magnet`)).json()) as { magnet_link: string };
    expect(event).toEqual({
      type: "request.ready",
      timestamp: expect.any(String),
      data: {
        id,
        status: "ready",
        infohash: st.infohash,
        magnet_link: magnet.magnet_link,
        content_hash: file.body.sha256(),
        content_size: file.body.size,
        url: origin.url("/report.txt"),
        scan: null,
      },
    });
    expect(got!.headers["x-request-id"]).toBe(requestId!);
    const d = await deliveryOnce(id, "delivered");
    expect(d.id).toBe(got!.headers["webhook-id"]);
  });

  test("a receiver that answers 500 twice gets the event on the third attempt, with one webhook-id", async () => {
    const rx = await receiver();
    rx.script(500, 500);
    const { id } = await post({ url: origin.url("/other.txt"), callback_url: rx.url });
    const got = await rx.waitFor(3);
    expect(new Set(got.map((g) => g.headers["webhook-id"])).size).toBe(1);
    for (const g of got) expect((wh.verify(g.body, g.headers) as any).data.id).toBe(id);
    const d = await deliveryOnce(id, "delivered");
    expect(d.log.map((a: any) => a.status_code)).toEqual([500, 500, 204]);
  });

  test("cancelling a running request sends request.cancelled", async () => {
    const rx = await receiver();
    const { id } = await post({ url: origin.url("/slow"), callback_url: rx.url });
    await svc.waitFor(id, ["fetching"]);
    expect((await svc.api(`/v1/requests/${id}`, { method: "DELETE" })).status).toBe(204);
    const [got] = await rx.waitFor(1);
    expect(wh.verify(got!.body, got!.headers)).toMatchObject({
      type: "request.cancelled",
      data: { id, status: "cancelled", magnet_link: null },
    });
  });
});

describe("a node killed mid-delivery", () => {
  test("SIGKILL while the receiver holds the request open: after restart the same message is delivered", async () => {
    const rx = await receiver();
    rx.script("hold");
    const { id } = await post({ url: origin.url("/third.txt"), callback_url: rx.url });
    const [first] = await rx.waitFor(1);
    expect(await svc.kill("SIGKILL")).not.toBe(0);
    // The kernel closed the dead process's socket: the held request is gone, never answered.
    await until(() => rx.released === 1, "the held request to be dropped");
    await svc.launch();
    const got = await rx.waitFor(2);
    expect(got[1]!.headers["webhook-id"]).toBe(first!.headers["webhook-id"]!);
    expect((wh.verify(got[1]!.body, got[1]!.headers) as any).data).toMatchObject({
      id,
      status: "ready",
      content_hash: third.body.sha256(),
    });
    const d = await deliveryOnce(id, "delivered");
    expect(d.log.map((a: any) => a.outcome)).toEqual(["abandoned", "delivered"]);
  });
});
