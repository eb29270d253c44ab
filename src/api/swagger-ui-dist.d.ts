// The two swagger-ui-dist files /docs serves, imported as text (seeder/process/docs-assets.ts with
// `with { type: "text" }` on Bun; edge/docs-assets.ts through wrangler's Text rule on the Worker).
declare module "swagger-ui-dist/swagger-ui-bundle.js" {
  const text: string;
  export default text;
}
declare module "swagger-ui-dist/swagger-ui.css" {
  const text: string;
  export default text;
}
