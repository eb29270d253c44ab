/**
 * One fetch's clock and kill switch: the caller's AbortSignal, FETCHER__TOTAL_TIMEOUT, the
 * connect timeout of each connect phase and the idle-read timer all end in one AbortController,
 * whose reason is the FetchError the fetch ends with.
 */
import type { Config } from "../../../src/config";
import { FetchError } from "./errors";

/** Owns the timers and the abort controller of one fetch. */
export class FetchRun {
  private readonly controller = new AbortController();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private idleTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly onCallerAbort: () => void;

  constructor(
    private readonly caller: AbortSignal,
    private readonly cfg: Config["fetcher"],
  ) {
    this.onCallerAbort = () =>
      this.abort(new FetchError("aborted", "The fetch was cancelled", { transient: false }));
    if (caller.aborted) this.onCallerAbort();
    else caller.addEventListener("abort", this.onCallerAbort, { once: true });
    this.timer(
      cfg.totalTimeoutMs,
      () => new FetchError("timeout", `The fetch did not finish within ${seconds(cfg.totalTimeoutMs)}`),
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  abort(reason: FetchError): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  private timer(ms: number, reason: () => FetchError): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.abort(reason());
    }, ms);
    this.timers.add(t);
  }

  /** A signal for one connect phase: the run's, plus the connect timeout. */
  connectPhase(host: string): { signal: AbortSignal; done(): void } {
    const phase = new AbortController();
    const forward = () => phase.abort(this.signal.reason);
    if (this.signal.aborted) forward();
    else this.signal.addEventListener("abort", forward, { once: true });
    const t = setTimeout(
      () =>
        phase.abort(
          new FetchError(
            "timeout",
            `Timed out connecting to ${host} after ${seconds(this.cfg.connectTimeoutMs)}`,
          ),
        ),
      this.cfg.connectTimeoutMs,
    );
    return {
      signal: phase.signal,
      done: () => {
        clearTimeout(t);
        this.signal.removeEventListener("abort", forward);
      },
    };
  }

  /**
   * Note activity for the idle-read timer: nothing received for FETCHER__READ_TIMEOUT aborts the
   * fetch. Called for every chunk, so it only stores a timestamp; one timer re-arms itself for
   * the time left instead of being replaced on each chunk.
   */
  touch = (): void => {
    this.lastActivity = performance.now();
    if (this.idleTimer === null) this.armIdle(this.cfg.readTimeoutMs);
  };

  private lastActivity = 0;

  private armIdle(ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      const left = this.lastActivity + this.cfg.readTimeoutMs - performance.now();
      if (left > 1) return this.armIdle(left);
      this.idleTimer = null;
      this.abort(new FetchError("timeout", `The origin sent nothing for ${seconds(this.cfg.readTimeoutMs)}`));
    }, ms);
    this.timers.add(t);
    this.idleTimer = t;
  }

  dispose(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.caller.removeEventListener("abort", this.onCallerAbort);
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
