CREATE TABLE `fetch_jobs` (
	`id` text PRIMARY KEY NOT NULL,
	`fingerprint` text NOT NULL,
	`status` text NOT NULL,
	`progress` integer DEFAULT 0 NOT NULL,
	`url` text NOT NULL,
	`method` text NOT NULL,
	`headers` text,
	`body` text,
	`trace_id` text,
	`node_name` text,
	`lease_token` text,
	`lease_expires_at` integer,
	`attempts` integer DEFAULT 0 NOT NULL,
	`max_attempts` integer DEFAULT 3 NOT NULL,
	`next_attempt_at` integer DEFAULT 0 NOT NULL,
	`cancel_requested` integer DEFAULT false NOT NULL,
	`content_hash` text,
	`content_size` integer,
	`content_type` text,
	`final_url` text,
	`infohash` text,
	`torrent_name` text,
	`piece_length` integer,
	`torrent` blob,
	`magnet_link` text,
	`seed_node` text,
	`seeding` integer DEFAULT false NOT NULL,
	`error_code` text,
	`error_message` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`completed_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `fetch_jobs_active_fingerprint` ON `fetch_jobs` (`fingerprint`) WHERE status IN ('queued','fetching','packaging','seeding');--> statement-breakpoint
CREATE INDEX `fetch_jobs_fingerprint_ready` ON `fetch_jobs` (`fingerprint`,`completed_at`);--> statement-breakpoint
CREATE INDEX `fetch_jobs_claim` ON `fetch_jobs` (`status`,`next_attempt_at`);--> statement-breakpoint
CREATE INDEX `fetch_jobs_lease` ON `fetch_jobs` (`status`,`lease_expires_at`);--> statement-breakpoint
CREATE INDEX `fetch_jobs_seed_node` ON `fetch_jobs` (`seed_node`,`seeding`);--> statement-breakpoint
CREATE INDEX `fetch_jobs_infohash` ON `fetch_jobs` (`infohash`);--> statement-breakpoint
CREATE TABLE `fetch_requests` (
	`id` text PRIMARY KEY NOT NULL,
	`job_id` text NOT NULL,
	`user_id` text,
	`client_ip` text,
	`url` text NOT NULL,
	`method` text NOT NULL,
	`ttl` integer NOT NULL,
	`request_id` text,
	`created_at` integer NOT NULL,
	`cancelled_at` integer,
	FOREIGN KEY (`job_id`) REFERENCES `fetch_jobs`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `fetch_requests_job` ON `fetch_requests` (`job_id`);--> statement-breakpoint
CREATE INDEX `fetch_requests_user` ON `fetch_requests` (`user_id`,`created_at`);