ALTER TABLE `fetch_jobs` ADD `scan_verdict` text;--> statement-breakpoint
ALTER TABLE `fetch_jobs` ADD `scan_engine` text;--> statement-breakpoint
ALTER TABLE `fetch_jobs` ADD `scanned_at` integer;