/**
 * Child process for the claim test: claims jobs one at a time from a shared database file as fast
 * as it can and prints the ids it won, one per line. It prints "ready" once the database is open and
 * starts when the parent writes a line to its stdin, so both processes really compete.
 */

import { openDatabase } from "../../seeder/process/database";
import { systemClock } from "../../src/clock";
import { loadConfig } from "../../src/config";
import { claimJobs } from "../../src/jobs/queue";

const [url, nodeName] = process.argv.slice(2) as [string, string];
const { db, client } = await openDatabase(loadConfig({ DATABASE__DATABASE_URL: url }));
console.log("ready");
for await (const _go of console) break;
const won: string[] = [];
for (let empty = 0; empty < 20; ) {
  const jobs = await claimJobs(db, systemClock, { nodeName, limit: 1, leaseMs: 60_000 });
  if (jobs.length === 0) {
    empty++;
    await Bun.sleep(5);
    continue;
  }
  for (const j of jobs) won.push(j.id);
}
console.log(won.join("\n"));
client.close();
