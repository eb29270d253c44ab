/** The Hono app as the tests build it: real database and config, a quiet log, the caller on loopback. */
import { type AppDeps, createApp } from "../../src/api/app";
import { systemClock } from "../../src/clock";
import { silentLogger } from "../../src/log";

export function testApp(deps: Pick<AppDeps, "db" | "config"> & Partial<AppDeps>) {
  return createApp({
    clock: systemClock,
    log: silentLogger,
    runtime: "bun",
    startedAt: Date.now(),
    clientIp: () => "127.0.0.1",
    ...deps,
  });
}
