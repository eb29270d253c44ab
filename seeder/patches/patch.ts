/**
 * What every library patch in seeder/patches/ declares, and the error that stops the process when
 * one cannot apply. Why each patch exists and why it is applied at run time: docs/patches.md.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";

export interface LibraryPatch {
  /** Stable name, as logged in `{"msg":"library patches","active":[...]}`. */
  name: string;
  /** One line: what it changes and why (the file's header comment has the details). */
  why: string;
  /** package name -> the exact version the patch was written and tested against. */
  writtenFor: Record<string, string>;
  /** The version of each package in `writtenFor` that this process really loads. */
  installedVersion(pkg: string): string;
  /** null when the patch can apply to what is loaded; otherwise what is missing or changed. */
  check(): string | null;
}

/** A patch the code relies on cannot apply: names the patch, the package versions and what changed. */
export class LibraryPatchError extends Error {
  constructor(
    readonly patch: string,
    readonly problem: string,
    readonly versions: string,
  ) {
    super(
      `library patch "${patch}" cannot apply to ${versions}: ${problem}. ProxyTorrent relies on it and refuses to run without it; see docs/patches.md`,
    );
    this.name = "LibraryPatchError";
  }
}

/** "webtorrent 3.0.22 (written for 3.0.21)" for each package, or "webtorrent 3.0.21" when it matches. */
export function describeVersions(p: LibraryPatch): string {
  return Object.entries(p.writtenFor)
    .map(([pkg, want]) => {
      const have = p.installedVersion(pkg);
      return have === want ? `${pkg} ${have}` : `${pkg} ${have} (written for ${want})`;
    })
    .join(", ");
}

/** Throw LibraryPatchError unless `p` can apply. */
export function requirePatch(p: LibraryPatch): void {
  const problem = p.check();
  if (problem !== null) throw new LibraryPatchError(p.name, problem, describeVersions(p));
}

/**
 * The version in the package.json of `pkg` as resolved from `fromDir` (the copy the patched code
 * really loads, not necessarily the top-level one). Walks up from the resolved entry point because
 * most packages' `exports` do not expose package.json.
 */
export function packageVersion(pkg: string, fromDir: string): string {
  let dir: string;
  try {
    dir = dirname(Bun.resolveSync(pkg, fromDir));
  } catch {
    return "not installed";
  }
  for (;;) {
    try {
      const json = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (json.name === pkg) return json.version ?? "unknown";
    } catch {
      // no package.json here: keep walking up
    }
    const up = dirname(dir);
    if (up === dir) return "unknown";
    dir = up;
  }
}
