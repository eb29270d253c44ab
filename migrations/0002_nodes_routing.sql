CREATE TABLE `nodes` (
	`name` text PRIMARY KEY NOT NULL,
	`public_url` text NOT NULL,
	`region` text,
	`pool` text,
	`version` text NOT NULL,
	`status` text NOT NULL,
	`started_at` integer NOT NULL,
	`last_seen_at` integer NOT NULL,
	`active_jobs` integer DEFAULT 0 NOT NULL,
	`torrents_seeding` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE INDEX `nodes_last_seen` ON `nodes` (`last_seen_at`);--> statement-breakpoint
ALTER TABLE `fetch_jobs` ADD `region` text;--> statement-breakpoint
ALTER TABLE `fetch_jobs` ADD `pool` text;