ALTER TABLE `fetch_requests` ADD `passkey` text;--> statement-breakpoint
ALTER TABLE `fetch_requests` ADD `passkey_hash` text;--> statement-breakpoint
ALTER TABLE `fetch_requests` ADD `api_key_id` text;--> statement-breakpoint
CREATE UNIQUE INDEX `fetch_requests_passkey` ON `fetch_requests` (`passkey_hash`);--> statement-breakpoint
CREATE INDEX `fetch_requests_api_key` ON `fetch_requests` (`api_key_id`);