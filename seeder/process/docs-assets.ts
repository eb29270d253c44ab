/** The /docs UI assets on Bun: read from the pinned swagger-ui-dist package as text (src/api/docs.ts). */
import css from "swagger-ui-dist/swagger-ui.css" with { type: "text" };
import js from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "text" };
import type { DocsAssets } from "../../src/api/docs";

export const docsAssets: DocsAssets = { js, css };
