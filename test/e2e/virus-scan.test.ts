/**
 * Virus scanning (SCAN__CLAMD) through the real service and a real clamd the test starts with only
 * its own signature (no official database: freshclam never runs here). Infected content is
 * refused and never stored or seeded; clean content becomes ready with its verdict shown and sent
 * in the webhook; clamd down refuses the body (fail-closed) unless SCAN__FAIL_OPEN lets it through.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Webhook } from "standardwebhooks";
import { generateSecret } from "../../src/webhooks/signing";
import { bodySignature, type Clamd, startClamd } from "../support/clamd";
import { removeTmpDirs, tmpDir } from "../support/clients";
import { type Origin, startOrigin, textRoute } from "../support/origin";
import { until } from "../support/poll";
import { metricValue } from "../support/prometheus";
import { blobPath, fileExists as exists } from "../support/scope";
import { Service } from "../support/service";
import { type Receiver, startReceiver } from "../webhooks/receiver";

const PATTERN = "PROXYTORRENT-TEST-MALWARE-7f3a9c";
const SIGNATURE = "ProxyTorrent.Test.Malware";
const SECRET = generateSecret();
const wh = new Webhook(SECRET);

let clamd: Clamd;
let origin: Origin;
let rx: Receiver;
let svc: Service;
let open: Service | undefined;

beforeAll(async () => {
  clamd = await startClamd({ "proxytorrent-test.ndb": bodySignature(SIGNATURE, PATTERN) });
  origin = await startOrigin({
    "/evil.txt": textRoute(`some text, then ${PATTERN}, then more text\n`),
    "/clean.txt": textRoute("nothing to see here\n".repeat(1000)),
    "/clean-again.txt": textRoute("nothing to see here\n".repeat(1000)),
    "/big.txt": textRoute("x".repeat(200_000)),
    "/while-down.txt": textRoute("scanned by nobody\n".repeat(100)),
    "/fail-open.txt": textRoute("let through unscanned\n".repeat(100)),
  });
  rx = await startReceiver();
  svc = await Service.start({
    env: {
      SCAN__CLAMD: clamd.socket,
      SCAN__TIMEOUT_MS: "30000",
      SCAN__MAX_BYTES: "100000",
      FETCHER__MAX_ATTEMPTS: "1",
      WEBHOOK__SECRET: SECRET,
    },
  });
});
afterAll(async () => {
  await svc?.stop();
  await open?.stop();
  await clamd?.stop();
  await origin?.close();
  await rx?.close();
  await removeTmpDirs();
});

const scans = (s: Service, verdict: string) => metricValue(s.url, "proxytorrent_scans_total", { verdict });

describe("virus scanning with clamd", () => {
  test("a body matching a signature ends in content_rejected, leaves the store and is never seeded", async () => {
    const id = await svc.create({ url: origin.url("/evil.txt") });
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("error");
    expect(st.error_code).toBe("content_rejected");
    expect(st.error_message).toContain(SIGNATURE);
    expect(st.infohash).toBeNull();
    expect(st.scan).toMatchObject({ verdict: "infected", engine: expect.stringMatching(/^ClamAV /) });
    expect((await svc.api(`/v1/requests/${id}/torrent`)).status).not.toBe(200);
    await until(
      async () => !(await exists(blobPath(svc, st.content_hash))),
      "the infected blob to go",
      15_000,
      50,
    );
    expect(await scans(svc, "infected")).toBe(1);
  });

  test("a clean body becomes ready with its verdict in the status, the webhook and the metrics", async () => {
    const id = await svc.create({ url: origin.url("/clean.txt"), callback_url: rx.url });
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("ready");
    expect(Object.keys(st).at(-1)).toBe("scan");
    expect(st.scan).toEqual({
      verdict: "clean",
      engine: expect.stringMatching(/^ClamAV \d+\.\d+/),
      scanned_at: expect.any(String),
    });
    expect(Date.parse(st.scan.scanned_at)).toBeLessThanOrEqual(Date.parse(st.completed_at));
    expect(await exists(blobPath(svc, st.content_hash))).toBe(true);

    const [got] = await rx.waitFor(1, 30_000);
    const event = wh.verify(got!.body, got!.headers) as { type: string; data: Record<string, unknown> };
    expect(event.type).toBe("request.ready");
    expect(event.data.scan).toEqual(st.scan);

    expect(await scans(svc, "clean")).toBe(1);
    const res = await fetch(`${svc.url}/metrics`);
    expect(await res.text()).toMatch(/^proxytorrent_scan_duration_seconds_count [1-9]/m);
  });

  test("the same bytes under another URL are not scanned again with the same signatures", async () => {
    const id = await svc.create({ url: origin.url("/clean-again.txt") });
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("ready");
    expect(st.scan.verdict).toBe("clean");
    expect(await scans(svc, "cached")).toBe(1);
    expect(await scans(svc, "clean")).toBe(1);
  });

  test("a body above SCAN__MAX_BYTES is refused unscanned (scan_too_large, fail-closed)", async () => {
    const id = await svc.create({ url: origin.url("/big.txt") });
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("error");
    expect(st.error_code).toBe("scan_too_large");
    expect(st.error_message).toContain("200000 bytes");
    expect(st.infohash).toBeNull();
  });

  test("clamd stopped: the body is refused (fail-closed by default)", async () => {
    await clamd.stop();
    const id = await svc.create({ url: origin.url("/while-down.txt") });
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("error");
    expect(st.error_code).toBe("scan_unavailable");
    expect(st.error_message).toContain("virus scanner");
    expect(st.error_message).not.toContain(clamd.socket);
    expect(st.infohash).toBeNull();
    await until(
      async () => !(await exists(blobPath(svc, st.content_hash))),
      "the unscanned blob to go",
      15_000,
      50,
    );
    expect(await scans(svc, "failed")).toBe(2);
    const started = await svc.waitForLog((l) => l.msg === "node started", "the start-up line");
    expect(started.virus_scan).toBe("fail-closed");
  });

  test("clamd stopped with SCAN__FAIL_OPEN=true: ready, marked unscanned, a warning logged", async () => {
    open = await Service.start({
      basePath: await tmpDir("pt-failopen-"),
      env: { SCAN__CLAMD: clamd.socket, SCAN__FAIL_OPEN: "true", FETCHER__MAX_ATTEMPTS: "1" },
    });
    const id = await open.create({ url: origin.url("/fail-open.txt") });
    const st = await open.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("ready");
    expect(st.scan).toEqual({ verdict: "unscanned", engine: null, scanned_at: expect.any(String) });
    const warning = await open.waitForLog(
      (l) => l.level === "WARNING" && String(l.msg).includes("UNSCANNED"),
      "the fail-open warning",
    );
    expect(String(warning.err)).toContain("clamd");
    expect(await scans(open, "unscanned")).toBe(1);
    const started = await open.waitForLog((l) => l.msg === "node started", "the start-up line");
    expect(started.virus_scan).toBe("fail-open");
  });
});
