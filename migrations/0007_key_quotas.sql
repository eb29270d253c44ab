ALTER TABLE `api_keys` ADD `max_bytes` integer;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `max_active` integer;--> statement-breakpoint
CREATE INDEX `fetch_requests_live_user` ON `fetch_requests` (`user_id`,`job_id`,`cancelled_at`) WHERE cancelled_at IS NULL;