/**
 * A strict reader of the Prometheus text exposition format (0.0.4) for tests: every line must be a
 * HELP/TYPE comment or a well-formed sample, every sample must belong to a declared family, and
 * labels are kept for every sample (the npm parsers we tried dropped histogram labels).
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)/y;
const SUFFIXES = ["_bucket", "_sum", "_count", "_total", "_created"];

export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string) => {
    const known = families.get(name);
    if (known) return known;
    const f: Family = { name, type: "untyped", help: "", samples: [] };
    families.set(name, f);
    return f;
  };
  for (const [i, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]!);
      if (meta[1] === "TYPE") f.type = meta[3]!;
      else f.help = meta[3]!;
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`line ${i + 1} is not a Prometheus sample: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      LABEL.lastIndex = 0;
      while (LABEL.lastIndex < m[2].length) {
        const l = LABEL.exec(m[2]);
        if (!l) throw new Error(`line ${i + 1} has malformed labels: ${line}`);
        labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
      }
    }
    const value = Number(m[3] === "+Inf" ? Number.POSITIVE_INFINITY : m[3]);
    if (Number.isNaN(value) && m[3] !== "NaN") throw new Error(`line ${i + 1} has a bad value: ${line}`);
    const name = m[1]!;
    const owner =
      families.get(name) ??
      SUFFIXES.map((s) => (name.endsWith(s) ? families.get(name.slice(0, -s.length)) : undefined)).find(
        Boolean,
      );
    if (!owner) throw new Error(`line ${i + 1}: sample ${name} has no # TYPE declaration`);
    owner.samples.push({ name, labels, value });
  }
  return families;
}

/** One sample's value from a running service's /metrics (0 when absent). */
export async function metricValue(
  baseUrl: string,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  for (const fam of parsePrometheus(await res.text()).values())
    for (const s of fam.samples)
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
  return 0;
}
