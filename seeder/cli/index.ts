/**
 * `proxytorrent <command>`: serve (API + node, the default for `npm start`), api, seeder, migrate,
 * config. commander parses the command line (well kept, no dependencies, good help output).
 */
import { Command } from "commander";
import {
  type Config,
  ConfigError,
  loadConfig,
  maskUrlSecrets,
  SETTINGS,
  unknownSettingMessage,
  unknownSettings,
} from "../../src/config";
import { DatabaseError, openDatabase, runMigrations } from "../process/database";
import {
  makeLogger,
  type Running,
  redactDbUrl,
  startApi,
  startEmbedded,
  startSeeder,
  stopOnSignals,
} from "../process/start";
import { registerKeysCommand } from "./keys";

// Everything this process creates (database, WAL, blobs, folders) is its own alone: the database
// holds the keys that sign requests. Explicit modes where files are made say the same.
process.umask(0o077);

function configOrExit(): Config {
  try {
    return loadConfig(process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      console.error("\nFix the variables above (environment or .env) and start again.");
      process.exit(2);
    }
    throw e;
  }
}

async function run(start: (c: Config) => Promise<Running>) {
  const config = configOrExit();
  const log = makeLogger(config);
  for (const u of unknownSettings(process.env))
    log.warn(unknownSettingMessage(u), { variable: u.variable, suggestion: u.suggestion });
  try {
    const running = await start(config);
    stopOnSignals(running, log);
  } catch (e) {
    log.error("start-up failed", { err: (e as Error).message });
    process.exit(1);
  }
}

const program = new Command()
  .name("proxytorrent")
  .description(
    "Fetch web content through a proxy-connected node and hand it out as a private, seeded torrent.",
  )
  .version(SETTINGS.APP_VERSION.default);

program
  .command("serve")
  .description("API and one seeder node in one process over a local libSQL file (the embedded default)")
  .action(() => run(startEmbedded));

program
  .command("api")
  .description("the API alone (distributed mode; nodes run `proxytorrent seeder`)")
  .action(() => run(startApi));

program
  .command("seeder")
  .description("a seeder node alone: claims jobs from DATABASE__DATABASE_URL, fetches, seeds")
  .action(() => run(startSeeder));

program
  .command("migrate")
  .description("apply database migrations and exit")
  .action(async () => {
    const config = configOrExit();
    try {
      const { client, db } = await openDatabase(config);
      await runMigrations(db).finally(() => client.close());
    } catch (e) {
      if (!(e instanceof DatabaseError)) throw e;
      console.error(e.message);
      process.exit(1);
    }
    console.log(`migrations applied to ${redactDbUrl(config.database.url)}`);
  });

program
  .command("config")
  .description("list every setting with its current value and meaning")
  .action(() => {
    configOrExit();
    for (const u of unknownSettings(process.env)) console.error(`warning: ${unknownSettingMessage(u)}`);
    for (const [name, s] of Object.entries(SETTINGS)) {
      const secret = /PASSWORD|SECRET|TOKEN/.test(name);
      const raw = process.env[name];
      const value = raw && name.endsWith("_URL") ? maskUrlSecrets(raw) : raw;
      const shown = raw ? (secret ? "***" : value) : `(default ${JSON.stringify(s.default) ?? "unset"})`;
      console.log(`${name}=${shown}\n    ${s.doc}`);
    }
  });

registerKeysCommand(program);

await program.parseAsync(process.argv);
