/**
 * The dashboard (deploy/grafana/proxytorrent.json) and alert rules (deploy/prometheus/alerts.yml)
 * shipped with the repo: promtool accepts the rules and the live /metrics of a real service, and
 * every metric a panel or rule queries is on that /metrics. `promtool` comes from Debian's
 * `prometheus` package (.ci/run installs it; no Prometheus server is started).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { type Family, parsePrometheus } from "../support/prometheus";
import { runToEnd } from "../support/run";
import { ROOT, Service } from "../support/service";

const DASHBOARD = join(ROOT, "deploy", "grafana", "proxytorrent.json");
const RULES = join(ROOT, "deploy", "prometheus", "alerts.yml");
/** Grafana's placeholder for the data source picked at import (a literal, not a JS template). */
const DS = "$" + "{DS_PROMETHEUS}";

function promtool(): string {
  const p = Bun.which("promtool");
  if (!p) throw new Error("promtool is missing: apt-get install prometheus (.ci/run does)");
  return p;
}

/** The `proxytorrent_*` names a PromQL expression reads (string literals skipped). */
function metricNames(expr: string): string[] {
  const code = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  return [...new Set(code.match(/\bproxytorrent_[a-zA-Z0-9_:]*/g) ?? [])];
}

/** Is `name` on the page: a family, or a histogram's (or summary's) _bucket/_sum/_count series? */
function exposed(page: Map<string, Family>, name: string): boolean {
  if (page.has(name)) return true;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  const fam = m ? page.get(m[1]!) : undefined;
  return fam !== undefined && (fam.type === "histogram" || (fam.type === "summary" && m![2] !== "bucket"));
}

/** Every PromQL expression of the dashboard: panel targets and query variables. */
async function dashboardExprs(): Promise<string[]> {
  const d = JSON.parse(await readFile(DASHBOARD, "utf8")) as {
    panels: { targets?: { expr: string }[] }[];
    templating: { list: { type: string; query: string | { query: string } }[] };
  };
  const exprs = d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  for (const v of d.templating.list)
    if (v.type === "query") exprs.push(typeof v.query === "string" ? v.query : v.query.query);
  return exprs;
}

async function ruleExprs(): Promise<string[]> {
  const r = Bun.YAML.parse(await readFile(RULES, "utf8")) as { groups: { rules: { expr: string }[] }[] };
  return r.groups.flatMap((g) => g.rules.map((x) => String(x.expr)));
}

async function checkMetrics(page: string): Promise<{ output: string; code: number }> {
  const p = Bun.spawn([promtool(), "check", "metrics"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  p.stdin.write(page);
  p.stdin.end();
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { output: `${out}${err}`, code };
}

let origin: Origin;
let svc: Service;
let text = "";

beforeAll(async () => {
  origin = await startOrigin({ "/o.bin": bytesRoute({ size: 50_000, seed: 7, contentType: "text/plain" }) });
  svc = await Service.start();
  // one request that becomes ready and one that fails, so counters and histograms have samples
  const ok = await svc.create({ url: origin.url("/o.bin") });
  expect((await svc.waitFor(ok)).status).toBe("ready");
  const bad = await svc.create({ url: origin.url("/missing") });
  expect((await svc.waitFor(bad)).status).toBe("error");
  const res = await fetch(`${svc.url}/metrics`);
  expect(res.status).toBe(200);
  text = await res.text();
});
afterAll(async () => {
  await svc?.stop();
  await origin?.close();
});

describe("dashboards and alerts as code", () => {
  test("promtool check rules accepts deploy/prometheus/alerts.yml; every rule has for, severity and a description", async () => {
    const r = await runToEnd([promtool(), "check", "rules", RULES]);
    expect(`${r.stdout}${r.stderr}`).toContain("SUCCESS");
    expect(r.code).toBe(0);
    const doc = Bun.YAML.parse(await readFile(RULES, "utf8")) as {
      groups: { rules: Record<string, any>[] }[];
    };
    const rules = doc.groups.flatMap((g) => g.rules);
    expect(rules.length).toBeGreaterThan(0);
    for (const rule of rules) {
      expect(rule.alert).toBeString();
      expect(rule.for).toBeString();
      expect(["warning", "critical"]).toContain(rule.labels?.severity);
      expect(rule.annotations?.description).toBeString();
    }
  });

  test("promtool check rules refuses a broken rule file (the check is not a no-op)", async () => {
    const dir = await tmpDir("pt-rules-");
    const broken = join(dir, "alerts.yml");
    await writeFile(broken, (await readFile(RULES, "utf8")).replace("expr: max(", "expr: max(("));
    const r = await runToEnd([promtool(), "check", "rules", broken]);
    expect(r.code).not.toBe(0);
  });

  test("promtool check metrics accepts the live /metrics (after a ready and a failed request)", async () => {
    expect(await checkMetrics(text)).toEqual({ output: "", code: 0 });
  });

  test("an API alone: clean exposition too, and no free-disk gauge (its 0 would read as a full disk)", async () => {
    const api = await Service.start({ command: "api" });
    try {
      const page = await (await fetch(`${api.url}/metrics`)).text();
      expect(await checkMetrics(page)).toEqual({ output: "", code: 0 });
      expect(parsePrometheus(page).has("proxytorrent_store_free_bytes")).toBe(false);
      expect(parsePrometheus(text).has("proxytorrent_store_free_bytes")).toBe(true);
    } finally {
      await api.stop();
    }
  });

  test("the new series have samples: POST→ready histogram, fetch errors by code", () => {
    const page = parsePrometheus(text);
    const sample = (name: string, labels: Record<string, string> = {}) =>
      [...page.values()]
        .flatMap((f) => f.samples)
        .find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(sample("proxytorrent_job_ready_seconds_count")).toBe(1);
    // seconds, not milliseconds: one small local body is ready well within a minute
    expect(sample("proxytorrent_job_ready_seconds_sum")).toBeGreaterThan(0);
    expect(sample("proxytorrent_job_ready_seconds_sum")).toBeLessThan(60);
    expect(sample("proxytorrent_fetch_errors_total", { code: "http_status", outcome: "final" })).toBe(1);
    expect(sample("proxytorrent_nodes_alive")).toBe(1);
    expect(sample("proxytorrent_store_free_bytes")).toBeGreaterThan(0);
    expect(sample("proxytorrent_queue_oldest_age_seconds")).toBe(0);
    expect(sample("proxytorrent_webhook_backlog")).toBe(0);
  });

  test("the dashboard imports with a DS_PROMETHEUS input that every query uses", async () => {
    const d = JSON.parse(await readFile(DASHBOARD, "utf8")) as Record<string, any>;
    expect(d.__inputs).toContainEqual(
      expect.objectContaining({ name: "DS_PROMETHEUS", type: "datasource", pluginId: "prometheus" }),
    );
    expect(d.templating.list).toContainEqual(
      expect.objectContaining({ name: "DS_PROMETHEUS", type: "datasource", query: "prometheus" }),
    );
    const ids = d.panels.map((p: { id: number }) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const queried = d.panels.filter((p: { type: string }) => p.type !== "row");
    expect(queried.length).toBeGreaterThan(10);
    for (const p of queried) {
      expect(p.datasource).toEqual({ type: "prometheus", uid: DS });
      expect(p.targets.length).toBeGreaterThan(0);
      for (const t of p.targets) expect(t.datasource.uid).toBe(DS);
    }
  });

  test("every metric the dashboard and the rules query is on /metrics", async () => {
    const page = parsePrometheus(text);
    const used = new Set([...(await dashboardExprs()), ...(await ruleExprs())].flatMap(metricNames));
    expect(used.size).toBeGreaterThan(15);
    expect([...used].filter((n) => !exposed(page, n))).toEqual([]);
    // the checker itself: a made-up name is reported, a histogram's series are allowed
    expect(metricNames('rate(proxytorrent_made_up_total{a="proxytorrent_x"}[5m])')).toEqual([
      "proxytorrent_made_up_total",
    ]);
    expect(exposed(page, "proxytorrent_made_up_total")).toBe(false);
    expect(exposed(page, "proxytorrent_fetch_duration_seconds_bucket")).toBe(true);
  });
});
