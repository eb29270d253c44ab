DROP INDEX `fetch_requests_user`;--> statement-breakpoint
CREATE INDEX `fetch_requests_created` ON `fetch_requests` (`created_at`,`id`);--> statement-breakpoint
CREATE INDEX `fetch_requests_user` ON `fetch_requests` (`user_id`,`created_at`,`id`);