/**
 * What a test file starts and must stop: origins and services, stopped after the file's last test
 * (newest first), then the temp dirs. Plus the small file checks the e2e tests share.
 */
import { afterAll } from "bun:test";
import { stat } from "node:fs/promises";
import { ContentStore } from "../../seeder/node/cas";
import { removeTmpDirs } from "./clients";
import { type Origin, startOrigin } from "./origin";
import { Service, type ServiceOptions } from "./service";

export function testScope(defaults: ServiceOptions = {}) {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await removeTmpDirs();
  });
  return {
    /** Run `fn` after the file's tests, before what was deferred earlier. */
    defer(fn: () => Promise<unknown>): void {
      cleanups.push(fn);
    },
    async origin(routes: Parameters<typeof startOrigin>[0]): Promise<Origin> {
      const o = await startOrigin(routes);
      cleanups.push(() => o.close());
      return o;
    },
    /** A service with `defaults`, `env` added to its environment. */
    async service(env: Record<string, string> = {}): Promise<Service> {
      const s = await Service.start({ ...defaults, env: { ...defaults.env, ...env } });
      cleanups.push(() => s.stop());
      return s;
    },
  };
}

export const fileExists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** Where `svc`'s content store keeps the blob of `hash`. */
export const blobPath = (svc: { basePath: string }, hash: string) =>
  new ContentStore(svc.basePath).pathFor(hash);
