/**
 * /metrics on the embedded service: valid Prometheus text, and the counters move with real work.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { aria2Download, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { type Family, parsePrometheus } from "../support/prometheus";
import { Service } from "../support/service";

let origin: Origin;
let svc: Service;
const body = bytesRoute({ size: 700_000, seed: 41, contentType: "text/plain" });

beforeAll(async () => {
  origin = await startOrigin({ "/m.txt": body });
  svc = await Service.start();
});
afterAll(async () => {
  await svc?.stop();
  await origin?.close();
});

async function scrape(): Promise<Map<string, Family>> {
  const res = await fetch(`${svc.url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  return parsePrometheus(await res.text());
}

/** The value of one sample (0 when the labelled series does not exist yet). */
const value = (m: Map<string, Family>, sample: string, labels: Record<string, string> = {}) => {
  for (const fam of m.values())
    for (const s of fam.samples)
      if (s.name === sample && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
  return 0;
};

describe("/metrics", () => {
  test("is Prometheus text with every documented family", async () => {
    const m = await scrape();
    for (const name of [
      "proxytorrent_requests_total",
      "proxytorrent_queue_depth",
      "proxytorrent_lease_expired_total",
      "proxytorrent_fetch_bytes_total",
      "proxytorrent_fetch_duration_seconds",
      "proxytorrent_torrents_seeding",
      "proxytorrent_upload_bytes_total",
      "proxytorrent_webhook_deliveries_total",
      "proxytorrent_http_request_duration_seconds",
    ])
      expect(m.has(name)).toBe(true);
    expect(m.get("proxytorrent_fetch_duration_seconds")!.type).toBe("histogram");
  });

  test("counters move with a real request and a real download", async () => {
    const before = await scrape();
    const id = await svc.create({ url: origin.url("/m.txt") });
    expect((await svc.waitFor(id)).status).toBe("ready");
    const dir = await tmpDir("pt-metrics-");
    const torrentPath = join(dir, "m.torrent");
    await writeFile(torrentPath, await svc.torrent(id));
    const file = await aria2Download({ torrentPath, dir: join(dir, "dl"), timeoutMs: 60_000 });
    expect(await sha256File(file)).toBe(body.body.sha256());

    const after = await scrape();
    const grew = (name: string, labels: Record<string, string> = {}) =>
      (value(after, name, labels) ?? 0) - (value(before, name, labels) ?? 0);
    expect(grew("proxytorrent_requests_total", { status: "ready" })).toBe(1);
    expect(grew("proxytorrent_fetch_bytes_total")).toBe(700_000);
    expect(value(after, "proxytorrent_torrents_seeding")).toBeGreaterThanOrEqual(1);
    // aria2c got the bytes from the peer and/or the web seed: together they carried the whole file
    const uploaded =
      grew("proxytorrent_upload_bytes_total", { via: "peer" }) +
      grew("proxytorrent_upload_bytes_total", { via: "webseed" });
    expect(uploaded).toBeGreaterThanOrEqual(700_000);
    expect(
      grew("proxytorrent_http_request_duration_seconds_count", {
        route: "/v1/requests",
        method: "POST",
        status: "201",
      }),
    ).toBe(1);
    // labelled by route pattern, never by raw path (ids would make the series unbounded)
    const routes = new Set(
      after.get("proxytorrent_http_request_duration_seconds")!.samples.map((r) => r.labels.route),
    );
    for (const r of routes) expect(r).not.toContain(id);
  });
});
