ALTER TABLE `fetch_jobs` ADD `expected_sha256` text;--> statement-breakpoint
ALTER TABLE `fetch_jobs` ADD `expected_size` integer;--> statement-breakpoint
ALTER TABLE `fetch_jobs` ADD `verified_digests` text;