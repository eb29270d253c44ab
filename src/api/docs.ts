/**
 * /docs: Swagger UI served entirely from this service (no CDN), so the page works offline and loads
 * no third-party script. The assets come from the pinned `swagger-ui-dist` package; how they are
 * read differs per runtime (a Worker has no file system), so the caller hands them in as text:
 * seeder/process/docs-assets.ts on Bun (`with { type: "text" }`), edge/docs-assets.ts on the Worker
 * (wrangler `[[rules]] type = "Text"`, see wrangler.toml).
 */
import type { Hono } from "hono";
import { compress } from "hono/compress";
import type { AppEnv } from "./app";

export interface DocsAssets {
  /** swagger-ui-dist/swagger-ui-bundle.js */
  js: string;
  /** swagger-ui-dist/swagger-ui.css */
  css: string;
}

/** Where the page loads its assets from (same origin). */
export const DOCS_ASSET_PATHS = [
  "/docs/assets/swagger-ui-bundle.js",
  "/docs/assets/swagger-ui.css",
  "/docs/assets/init.js",
] as const;

// validatorUrl "none": Swagger UI would otherwise send the spec to validator.swagger.io.
const INIT_JS = `window.onload = function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: "none",
  });
};
`;

// Swagger UI styles elements inline and draws icons from data: URIs; nothing else is needed.
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title: string): string {
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>${escapeHtml(title)}</title>
    <link rel="stylesheet" href="${DOCS_ASSET_PATHS[1]}" />
  </head>
  <body>
    <div id="swagger-ui" data-openapi="/openapi.json"></div>
    <script src="${DOCS_ASSET_PATHS[0]}"></script>
    <script src="${DOCS_ASSET_PATHS[2]}"></script>
  </body>
</html>
`;
}

/** Mount the page at each of `pagePaths` and its assets under /docs/assets/. */
export function mountDocs(
  app: Hono<AppEnv>,
  opts: {
    title: string;
    pagePaths: string[];
    assets?: DocsAssets;
    /**
     * gzip the assets here (Bun: 1.7 MB of script). Not on Workers: workerd compresses by itself
     * and would encode an already gzipped body again.
     */
    compress: boolean;
  },
): void {
  const html = page(opts.title);
  for (const path of opts.pagePaths) {
    app.get(path, (c) => {
      c.header("Content-Security-Policy", CSP);
      return c.html(html);
    });
  }
  const assets = opts.assets;
  if (!assets) return; // tests that build the app without them; the page then has no UI
  // The stylesheet names a source map that is not shipped: no 404 for it in the browser's console.
  const css = assets.css.replace(/\/\*# sourceMappingURL=[^*]*\*\/\s*$/, "");
  const files: Record<(typeof DOCS_ASSET_PATHS)[number], [string, string]> = {
    "/docs/assets/swagger-ui-bundle.js": [assets.js, "text/javascript; charset=utf-8"],
    "/docs/assets/swagger-ui.css": [css, "text/css; charset=utf-8"],
    "/docs/assets/init.js": [INIT_JS, "text/javascript; charset=utf-8"],
  };
  for (const [path, [body, type]] of Object.entries(files)) {
    app.get(path, opts.compress ? compress() : (_c, next) => next(), (c) =>
      c.body(body, 200, {
        "Content-Type": type,
        "Cache-Control": "public, max-age=86400",
        "X-Content-Type-Options": "nosniff",
      }),
    );
  }
}
