/**
 * The /docs UI assets on the Worker. wrangler's bundler (esbuild) refuses `with { type: "text" }`,
 * so these plain imports are turned into text modules by the `[[rules]] type = "Text"` in
 * wrangler.toml (see src/api/docs.ts). edge/worker.ts reaches this file through package.json
 * "imports" (`#docs-assets`, condition "workerd"), so Bun, which would run the .js as code, never
 * loads it: under Bun the same specifier names seeder/process/docs-assets.ts.
 */
import css from "swagger-ui-dist/swagger-ui.css";
import js from "swagger-ui-dist/swagger-ui-bundle.js";
import type { DocsAssets } from "../src/api/docs";

export const docsAssets: DocsAssets = { js, css };
