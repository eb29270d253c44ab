ALTER TABLE `fetch_requests` ADD `retention` integer;--> statement-breakpoint
ALTER TABLE `fetch_requests` ADD `expires_at` integer;--> statement-breakpoint
ALTER TABLE `fetch_requests` ADD `expired_at` integer;--> statement-breakpoint
CREATE INDEX `fetch_requests_due` ON `fetch_requests` (`expires_at`) WHERE expires_at IS NOT NULL AND expired_at IS NULL AND cancelled_at IS NULL;--> statement-breakpoint
CREATE INDEX `fetch_requests_expired` ON `fetch_requests` (`expired_at`) WHERE expired_at IS NOT NULL;