/**
 * The resume decision after a body broke off: continue with a Range request where the
 * representation allows it and the origin answers with exactly the missing part, otherwise
 * start the body again from scratch.
 */
import type { Exchange, Hop, Send } from "./request";
import { type Representation, rangeContinues } from "./response";
import type { FetchRun } from "./run";

type Accept = (ex: Exchange, hop: Hop, expectPartial: boolean) => Representation;

/**
 * Can a body of `rep` be resumed with Range/If-Range? Not over a caller's own Range (that part
 * is stored as is), not for HEAD, and only for a whole identity body with a strong validator.
 */
export function canResume(rep: Representation, hop: Hop, callerRange: boolean): boolean {
  return !callerRange && hop.method !== "HEAD" && rep.validator !== null && rep.status === 200;
}

/**
 * The next response after an interruption with `written` decoded bytes in the writer. `resumed`:
 * it continues the body at `written` (keep the writer); otherwise `rep` describes a whole new
 * body and the writer must start over. The returned connection is the caller's; on a throw, no
 * connection is left open.
 */
export async function recover(
  send: Send,
  run: FetchRun,
  hop: Hop,
  rep: Representation,
  written: number,
  resumable: boolean,
  accept: Accept,
): Promise<{ ex: Exchange; rep: Representation; resumed: boolean }> {
  // Only identity bodies are resumed, so written bytes and body offsets are the same.
  if (resumable && written > 0) {
    const ex = await send(run, hop, { Range: `bytes=${written}-`, "If-Range": rep.validator! });
    const next = settleOnThrow(ex, () => accept(ex, hop, true));
    if (next.status === 206 && rangeContinues(ex.res, written, rep.length)) return { ex, rep, resumed: true };
    // 200: the representation changed (or Range was ignored); that is the new whole body.
    if (next.status !== 206) return { ex, rep: next, resumed: false };
    // A 206 for a different range: start again without Range.
    ex.conn.destroy();
  }
  const ex = await send(run, hop);
  return { ex, rep: settleOnThrow(ex, () => accept(ex, hop, false)), resumed: false };
}

function settleOnThrow<T>(ex: Exchange, f: () => T): T {
  try {
    return f();
  } catch (e) {
    ex.conn.destroy();
    throw e;
  }
}
