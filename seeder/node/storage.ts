/**
 * The storage folder (STORAGE__BASE_PATH) as a private place of one process:
 * - it is created 0700, and an existing folder that others may read is tightened to 0700 (with a
 *   log line), because it holds the database, whose API key hashes sign requests;
 * - a node holds an exclusive lock on it for as long as it runs, so that a second `serve`/`seeder`
 *   on the same folder is refused instead of seeding and registering as the same node;
 * - it remembers which registrations of the node name were made from it, so that a restart right
 *   after a crash can take its own still-"live" row back (src/nodes/registry.ts).
 */

import { dlopen, FFIType, read } from "bun:ffi";
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "../../src/log";

export const LOCK_FILE = "proxytorrent.lock";
const INSTANCE_FILE = "node-instance.json";

const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, "0");

/**
 * Create the folder 0700 (`create`); tighten an existing one to 0700 when group or others may
 * enter or read it. Tightening our own folder (with a warning) rather than refusing to start: the
 * fix is certain and an upgrade from a version that made it 0755 needs no manual step.
 */
export function secureStorageFolder(basePath: string, log: Logger, create = true): void {
  const dir = resolve(basePath);
  if (create) mkdirSync(dir, { recursive: true, mode: 0o700 });
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(dir);
  } catch {
    return; // the API alone with a database elsewhere: no folder, nothing to protect
  }
  if ((st.mode & 0o077) === 0) return;
  try {
    chmodSync(dir, 0o700);
  } catch (e) {
    throw new Error(
      `the storage folder ${dir} (STORAGE__BASE_PATH) is readable by other users (mode ${octal(st.mode)}) and could not be made private: ${(e as Error).message}. Run \`chmod 700 ${dir}\` as its owner`,
    );
  }
  log.warn("storage folder was readable by other users; made it private (0700)", {
    path: dir,
    was: octal(st.mode),
  });
}

/** A database file outside the storage folder (DATABASE__DATABASE_URL=file:…) gets 0600 too. */
export function secureDatabaseFile(url: string, log: Logger): void {
  if (!url.startsWith("file:")) return;
  const path = url.slice("file:".length).split("?")[0]!;
  if (!path || path === ":memory:") return;
  for (const f of [path, `${path}-wal`, `${path}-shm`]) {
    let mode: number;
    try {
      mode = statSync(f).mode;
    } catch {
      continue;
    }
    if ((mode & 0o077) === 0) continue;
    chmodSync(f, 0o600);
    log.warn("database file was readable by other users; made it private (0600)", {
      path: resolve(f),
      was: octal(mode),
    });
  }
}

// flock(2) through libc: the lock belongs to the open file, so the kernel drops it when the
// process dies in any way (SIGKILL included) and a lock file left behind is never stale. A pid
// file or O_EXCL lock file would need guessing whether its pid is still ours after a crash.
const LOCK_EX = 2;
const LOCK_NB = 4;
let libc: {
  symbols: { flock(fd: number, op: number): number; __errno_location(): unknown };
} | null = null;

function flock(fd: number): { ok: true } | { ok: false; errno: number } {
  libc ??= dlopen(process.platform === "darwin" ? "libc.dylib" : "libc.so.6", {
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  }) as unknown as typeof libc;
  if (libc!.symbols.flock(fd, LOCK_EX | LOCK_NB) === 0) return { ok: true };
  const where = libc!.symbols.__errno_location() as Parameters<typeof read.i32>[0];
  return { ok: false, errno: read.i32(where, 0) };
}

export class StorageLockedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageLockedError";
  }
}

export interface StorageLock {
  release(): void;
}

/**
 * Take the storage folder for this process, or throw naming the folder and the process that has
 * it. The lock file says who holds it (pid, node name, since when); only the lock itself counts.
 */
export function lockStorageFolder(basePath: string, nodeName: string): StorageLock {
  const path = join(resolve(basePath), LOCK_FILE);
  const fd = openSync(path, "a+", 0o600);
  const got = flock(fd);
  if (!got.ok) {
    closeSync(fd);
    const EWOULDBLOCK = 11;
    if (got.errno !== EWOULDBLOCK)
      throw new StorageLockedError(
        `cannot lock the storage folder ${resolve(basePath)} (${path}): errno ${got.errno}`,
      );
    let holder = "another process";
    try {
      const h = JSON.parse(readFileSync(path, "utf8")) as { pid?: number; node?: string; since?: string };
      holder = `pid ${h.pid}, node "${h.node}", running since ${h.since}`;
    } catch {
      /* written a moment after locking: name no details */
    }
    throw new StorageLockedError(
      `the storage folder ${resolve(basePath)} (STORAGE__BASE_PATH) is in use by another ProxyTorrent process (${holder}); stop that one, or give this one its own STORAGE__BASE_PATH`,
    );
  }
  // Replace the previous holder's details (ftruncate through the path; we hold the lock).
  writeFileSync(
    path,
    `${JSON.stringify({ pid: process.pid, node: nodeName, since: new Date().toISOString() })}\n`,
    { mode: 0o600 },
  );
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      closeSync(fd);
    },
  };
}

/**
 * `started_at` values of this node name's registrations made from this folder, newest first.
 * Only one process uses the folder at a time (the lock), so a live registry row carrying one of
 * them was left by this folder's own previous run, not by another process.
 */
export function ownRegistrations(basePath: string, nodeName: string): number[] {
  try {
    const saved = JSON.parse(readFileSync(join(resolve(basePath), INSTANCE_FILE), "utf8")) as {
      node?: string;
      started_at?: number[];
    };
    return saved.node === nodeName && Array.isArray(saved.started_at) ? saved.started_at : [];
  } catch {
    return [];
  }
}

/** Remember a registration before making it (so a crash in between cannot orphan it). */
export function recordRegistration(basePath: string, nodeName: string, startedAt: number): void {
  const started = [startedAt, ...ownRegistrations(basePath, nodeName)].slice(0, 5);
  writeFileSync(
    join(resolve(basePath), INSTANCE_FILE),
    `${JSON.stringify({ node: nodeName, started_at: started })}\n`,
    { mode: 0o600 },
  );
}
