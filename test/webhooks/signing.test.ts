/**
 * Signatures (Web Crypto) against the reference `standardwebhooks` package, the retry schedule,
 * and the webhook settings.
 */
import { describe, expect, test } from "bun:test";
import { Webhook } from "standardwebhooks";
import { ConfigError, loadConfig } from "../../src/config";
import { MAX_RETRY_AFTER_MS, nextAttemptAt, parseRetryAfter } from "../../src/webhooks/outbox";
import { decodeSecret, generateSecret, signatureHeader, webhookHeaders } from "../../src/webhooks/signing";

describe("signing", () => {
  test("our signature is the reference library's, byte for byte", async () => {
    const secret = generateSecret();
    const body = JSON.stringify({ type: "request.ready", data: { id: "r1", url: "http://x.test/é" } });
    const at = new Date(1_767_225_600_000);
    const ours = await signatureHeader([secret], "msg_1", Math.floor(at.getTime() / 1000), body);
    expect(ours).toBe(new Webhook(secret).sign("msg_1", at, body));
  });

  test("the reference library verifies our headers; a changed body or id is rejected", async () => {
    const secret = generateSecret();
    const body = '{"type":"request.failed"}';
    const headers = await webhookHeaders([secret], "msg_abc", Date.now(), body);
    expect(new Webhook(secret).verify(body, headers)).toEqual({ type: "request.failed" });
    expect(() => new Webhook(secret).verify(body.replace("failed", "ready"), headers)).toThrow();
    expect(() => new Webhook(secret).verify(body, { ...headers, "webhook-id": "msg_other" })).toThrow();
  });

  test("during a rotation both secrets sign, space-separated, and either verifies", async () => {
    const [a, b] = [generateSecret(), generateSecret()];
    const body = "{}";
    const headers = await webhookHeaders([a, b], "msg_r", Date.now(), body);
    expect(headers["webhook-signature"]!.split(" ")).toHaveLength(2);
    for (const s of [a, b]) expect(new Webhook(s).verify(body, headers)).toEqual({});
    expect(() => new Webhook(generateSecret()).verify(body, headers)).toThrow();
  });

  test("secrets: whsec_ and base64 of 24 to 64 bytes", () => {
    expect("key" in decodeSecret(generateSecret())).toBe(true);
    expect(decodeSecret("abc")).toEqual({ problem: "must start with whsec_" });
    expect("problem" in decodeSecret("whsec_!!!")).toBe(true);
    expect("problem" in decodeSecret(`whsec_${btoa("short")}`)).toBe(true);
    expect("key" in decodeSecret(`whsec_${btoa("x".repeat(24))}`)).toBe(true);
    // Without its padding, as the Standard Webhooks libraries also accept it.
    expect("key" in decodeSecret(`whsec_${btoa("x".repeat(25)).replace(/=+$/, "")}`)).toBe(true);
    expect(decodeSecret("whsec_")).toEqual({ problem: "must be whsec_ followed by base64" });
  });
});

describe("retry schedule", () => {
  const delays = [5000, 300_000, 1_800_000];
  test("each failed attempt waits its step; after the last step the message is given up", () => {
    expect(nextAttemptAt(1, delays, 1000, null)).toBe(6000);
    expect(nextAttemptAt(3, delays, 0, null)).toBe(1_800_000);
    expect(nextAttemptAt(4, delays, 0, null)).toBeNull();
  });

  test("Retry-After makes the wait longer, never shorter, and is capped at a day", () => {
    expect(nextAttemptAt(1, delays, 0, 60_000)).toBe(60_000);
    expect(nextAttemptAt(2, delays, 0, 60_000)).toBe(300_000);
    expect(nextAttemptAt(1, delays, 0, 30 * 86_400_000)).toBe(MAX_RETRY_AFTER_MS);
  });

  test("Retry-After as seconds or as an HTTP date", () => {
    const now = Date.UTC(2026, 0, 1, 12, 0, 0);
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 12:05:00 GMT", now)).toBe(300_000);
    expect(parseRetryAfter("soon", now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });
});

describe("settings", () => {
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return [];
    } catch (e) {
      if (e instanceof ConfigError) return e.problems.map((p) => p.variable);
      throw e;
    }
  };

  test("defaults: the Standard Webhooks schedule over about three days, 15 s timeout, no secret", () => {
    const c = loadConfig({});
    expect(c.webhook.retryDelaysMs.map((ms) => ms / 1000)).toEqual([
      5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000, 36000,
    ]);
    const days = c.webhook.retryDelaysMs.reduce((a, b) => a + b, 0) / 86_400_000;
    expect(days).toBeGreaterThan(3);
    expect(days).toBeLessThan(3.5);
    expect(c.webhook.timeoutMs).toBe(15_000);
    expect(c.webhook.secrets).toEqual([]);
  });

  test("WEBHOOK__RETRY_DELAYS accepts comma-separated seconds or a JSON array ([] = no retries)", () => {
    expect(loadConfig({ WEBHOOK__RETRY_DELAYS: "1,1,1" }).webhook.retryDelaysMs).toEqual([1000, 1000, 1000]);
    expect(loadConfig({ WEBHOOK__RETRY_DELAYS: "[]" }).webhook.retryDelaysMs).toEqual([]);
    expect(problems({ WEBHOOK__RETRY_DELAYS: "5,soon" })).toEqual(["WEBHOOK__RETRY_DELAYS"]);
  });

  test("WEBHOOK__SECRET must be whsec_…; several (a rotation) are accepted", () => {
    const [a, b] = [generateSecret(), generateSecret()];
    expect(loadConfig({ WEBHOOK__SECRET: `${a},${b}` }).webhook.secrets).toEqual([a, b]);
    expect(problems({ WEBHOOK__SECRET: "hunter2" })).toEqual(["WEBHOOK__SECRET"]);
    expect(problems({ WEBHOOK__TIMEOUT: "0" })).toEqual(["WEBHOOK__TIMEOUT"]);
  });
});
