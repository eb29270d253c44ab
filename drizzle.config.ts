import { defineConfig } from "drizzle-kit";

// `npm run db:generate` writes SQL migrations into migrations/ from src/db/schema/.
export default defineConfig({
  dialect: "sqlite",
  schema: "./src/db/schema/index.ts",
  out: "./migrations",
});
