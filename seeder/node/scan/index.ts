/**
 * Virus scanning of fetched bodies (SCAN__CLAMD): the committed blob is streamed to clamd before
 * the job may package it. Infected content ends the job (`content_rejected`); when clamd cannot
 * give a verdict the job fails (`scan_unavailable`, retried like a network error) unless
 * SCAN__FAIL_OPEN lets the body through unscanned. Bytes already found clean by the same engine
 * and signature version (clamd's VERSION) are not sent again.
 */
import type { Clock } from "../../../src/clock";
import type { Config } from "../../../src/config";
import type { Database } from "../../../src/db";
import type { ScanVerdict } from "../../../src/db/schema";
import { scannedClean } from "../../../src/jobs/queue";
import type { Logger } from "../../../src/log";
import type { Metrics } from "../../process/metrics";
import { ClamdClient, ClamdUnavailable } from "./clamd";

export type ScanErrorCode =
  /** clamd found a signature in the body. Permanent. */
  | "content_rejected"
  /** clamd down, timing out or answering an error (fail-closed). Transient: retried with backoff. */
  | "scan_unavailable"
  /** The body is above SCAN__MAX_BYTES (or clamd's StreamMaxLength): never scannable. Permanent. */
  | "scan_too_large";

/** How a scan ends a job; its message is written for the caller (no socket paths, no addresses). */
export class ScanError extends Error {
  constructor(
    readonly code: ScanErrorCode,
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
  }
}

/** What the job records about the scan (fetch_jobs.scan_*). */
export interface ScanRecord {
  scanVerdict: ScanVerdict;
  scanEngine: string | null;
  scannedAt: number;
}

export type ScanOutcome = { record: ScanRecord; signature?: string };

export interface ScannerDeps {
  config: Config;
  db: Database;
  clock: Clock;
  metrics?: Metrics;
}

export class Scanner {
  private readonly client: ClamdClient;

  constructor(
    private readonly deps: ScannerDeps,
    address: string,
  ) {
    this.client = new ClamdClient(address, deps.config.scan.timeoutMs);
  }

  /** Scan a stored blob. `signature` is set when it is infected; throws ScanError when fail-closed. */
  async scan(
    blob: { contentHash: string; size: number; path: string },
    signal: AbortSignal,
    log: Logger,
  ): Promise<ScanOutcome> {
    const { db, clock, metrics, config } = this.deps;
    const t0 = performance.now();
    let engine: string | null = null;
    try {
      engine = await this.client.version(signal);
      if (await scannedClean(db, blob.contentHash, engine)) {
        metrics?.scansTotal.inc({ verdict: "cached" });
        log.info("content already scanned clean with these signatures", { scan_engine: engine });
        return { record: { scanVerdict: "clean", scanEngine: engine, scannedAt: clock.now() } };
      }
      if (blob.size > config.scan.maxBytes)
        throw new ClamdUnavailable(`the body is larger than SCAN__MAX_BYTES (${config.scan.maxBytes})`, true);
      const verdict = await this.client.scanFile(blob.path, signal);
      const seconds = (performance.now() - t0) / 1000;
      metrics?.scanDuration.observe(seconds);
      metrics?.scansTotal.inc({ verdict: verdict.infected ? "infected" : "clean" });
      const record: ScanRecord = {
        scanVerdict: verdict.infected ? "infected" : "clean",
        scanEngine: engine,
        scannedAt: clock.now(),
      };
      log.info(verdict.infected ? "virus scan: infected" : "virus scan: clean", {
        scan_engine: engine,
        ms: Math.round(seconds * 1000),
        ...(verdict.infected ? { signature: verdict.signature } : {}),
      });
      return verdict.infected ? { record, signature: verdict.signature } : { record };
    } catch (e) {
      if (!(e instanceof ClamdUnavailable) || signal.aborted) throw e;
      const fields = { err: e.message, scan_engine: engine ?? undefined, bytes: blob.size };
      if (config.scan.failOpen) {
        metrics?.scansTotal.inc({ verdict: "unscanned" });
        log.warn("virus scan failed: the body goes through UNSCANNED (SCAN__FAIL_OPEN=true)", fields);
        return { record: { scanVerdict: "unscanned", scanEngine: engine, scannedAt: clock.now() } };
      }
      metrics?.scansTotal.inc({ verdict: "failed" });
      log.warn("virus scan failed: the body is refused (fail-closed; SCAN__FAIL_OPEN=false)", fields);
      if (e.tooLarge)
        throw new ScanError(
          "scan_too_large",
          `The body (${blob.size} bytes) is larger than the virus scanner accepts, and unscanned content is not shared`,
          false,
        );
      throw new ScanError(
        "scan_unavailable",
        `The virus scanner could not check the body (${e.message}), and unscanned content is not shared`,
        true,
      );
    }
  }
}
