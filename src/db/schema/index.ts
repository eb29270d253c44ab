/** All tables. One file per area; drizzle-kit reads this folder to generate migrations. */

export * from "./auth";
export * from "./jobs";
export * from "./nodes";
export * from "./webhooks";
