import './node-version';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import {
  connectionOptions,
  env,
  logOptions,
  observeOptions,
  pluginApiOptions,
  queueOptions,
  reloadOptions,
  sandboxOptions,
  supervisorOptions,
  workerOptions,
} from '../config';
import { installRemoteOptions, remoteOptionsFrom } from '../install/options';
import { healthFileOption, healthRuleOptions } from './health';
import { createLogger, type LogFormat, type Logger } from '../log';
import type { FetchOptions, SandboxLimits } from '../plugins/types';
import { announceOptions, announceTargetFrom } from './reload-notice';

/**
 * Entry point of the `posthog-plugins` command. Every command gets its own --help; every option can also
 * come from the environment (see src/config.ts).
 */
function loggerFor(argv: { 'log-level': string; 'log-format': string }): Logger {
  return createLogger(argv['log-level'], argv['log-format'] as LogFormat);
}

/** A command that ends with an answer, not a usage error: the reason alone on stderr, exit 1. */
async function failsWith(command: string, run: () => Promise<void>): Promise<void> {
  await run().catch((err: Error) => {
    process.stderr.write(`posthog-plugins ${command}: ${err.message}\n`);
    process.exit(1);
  });
}

/** Config ids as given on the command line: positive integers. */
function configIds(values: unknown[]): number[] {
  return values.map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0)
      throw new Error(`not a plugin config id: ${JSON.stringify(v)} (see \`posthog-plugins list\`)`);
    return n;
  });
}

function limitsFrom(argv: {
  'memory-limit-mb': number;
  'cpu-timeout-ms': number;
  'wall-timeout-ms': number;
  'max-result-bytes': number;
}): SandboxLimits {
  return {
    memoryLimitMb: argv['memory-limit-mb'],
    cpuTimeoutMs: argv['cpu-timeout-ms'],
    wallTimeoutMs: argv['wall-timeout-ms'],
    maxResultBytes: argv['max-result-bytes'],
  };
}

function fetchFrom(argv: {
  'fetch-timeout-ms': number;
  'fetch-max-bytes': number;
  'fetch-allow': string;
}): FetchOptions {
  return { timeoutMs: argv['fetch-timeout-ms'], maxBytes: argv['fetch-max-bytes'], allow: argv['fetch-allow'] };
}

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('posthog-plugins')
    .usage(
      '$0 <command> [options]\n\nRuns PostHog plugins on Celery process_event_with_plugins tasks and hands the results to Python Celery.',
    )
    .command(
      'start',
      'Consume process_event_with_plugins, run the plugins, publish process_event (until SIGTERM), in supervised worker processes',
      (y) =>
        y.options({
          ...connectionOptions,
          ...queueOptions,
          ...reloadOptions,
          ...sandboxOptions,
          ...pluginApiOptions,
          ...workerOptions,
          ...observeOptions,
          ...supervisorOptions,
          ...healthFileOption,
          ...logOptions,
        }),
      async (argv) => {
        const { runStart } = await import('./start');
        // A start that cannot go on (bad settings, a queue RabbitMQ will not let us declare) says why and exits 1,
        // without yargs' usage text: the command line was fine.
        await runStart(
          {
            broker: argv.broker,
            databaseUrl: argv['database-url'],
            baseDir: argv['base-dir'],
            queue: argv.queue,
            outputQueue: argv['output-queue'],
            concurrency: argv.concurrency,
            batchSize: argv['batch-size'],
            memoryLimitMb: argv['memory-limit-mb'],
            cpuTimeoutMs: argv['cpu-timeout-ms'],
            wallTimeoutMs: argv['wall-timeout-ms'],
            maxResultBytes: argv['max-result-bytes'],
            fetchTimeoutMs: argv['fetch-timeout-ms'],
            fetchMaxBytes: argv['fetch-max-bytes'],
            fetchAllow: argv['fetch-allow'],
            visibilityTimeout: argv['visibility-timeout'],
            leaseTtlMs: argv['lease-ttl-ms'],
            prefetchMultiplier: argv['prefetch-multiplier'],
            amqpPassive: argv['amqp-passive'],
            amqpQueueArguments: argv['amqp-queue-arguments'],
            amqpOutputQueueArguments: argv['amqp-output-queue-arguments'],
            redisUrl: argv['redis-url'],
            reloadChannel: argv['reload-channel'],
            taskTimeoutMs: argv['task-timeout-ms'],
            isolateIdleMs: argv['isolate-idle-ms'],
            isolateMemoryBudgetMb: argv['isolate-memory-budget-mb'],
            setupRetries: argv['setup-retries'],
            setupRetryMs: argv['setup-retry-ms'],
            siteUrl: argv['site-url'],
            hostname: argv.hostname,
            taskEvents: argv['task-events'],
          },
          {
            workers: argv.workers,
            heartbeatIntervalMs: argv['heartbeat-interval-ms'],
            heartbeatTimeoutMs: argv['heartbeat-timeout-ms'],
            stuckTimeoutMs: argv['stuck-timeout-ms'],
            shutdownTimeoutMs: argv['shutdown-timeout-ms'],
            crashLimit: argv['crash-limit'],
            crashWindowMs: argv['crash-window-ms'],
            healthFile: argv['health-file'],
            metricsPort: argv['metrics-port'],
            metricsHost: argv['metrics-host'],
          },
          { level: argv['log-level'], format: argv['log-format'] },
          loggerFor(argv),
        ).catch((err: Error) => {
          process.stderr.write(`posthog-plugins: ${err.message}\n`);
          process.exit(1);
        });
        process.exit(0);
      },
    )
    // Internal: one worker process of `start` (settings come from the supervisor). Not listed in --help.
    .command({
      command: 'worker',
      describe: false,
      handler: async () => {
        const { runWorker } = await import('./worker');
        await runWorker().catch((err: Error) => {
          process.stderr.write(`posthog-plugins: ${err.message}\n`);
          process.exit(1);
        });
      },
    })
    .command(
      'migrate',
      "Create PostHog's plugin tables where they are missing (SQLite file or an empty Postgres)",
      (y) => y.options({ 'database-url': connectionOptions['database-url'], ...logOptions }),
      async (argv) => {
        const { runMigrate } = await import('./migrate');
        await runMigrate(argv['database-url'], loggerFor(argv)).catch((err: Error) => {
          // A PostHog database is refused with the reason alone, exit 1.
          process.stderr.write(`posthog-plugins migrate: ${err.message}\n`);
          process.exit(1);
        });
      },
    )
    .command(
      'install <source>',
      'Install a plugin (folder, .js/.ts file, .zip/.tgz archive, GitHub/GitLab link, npm package or archive URL) and enable it for a team',
      (y) =>
        y
          .positional('source', {
            type: 'string',
            demandOption: true,
            describe:
              'A path (plugin folder, .js/.ts file, .zip/.tgz archive), or a link: https://github.com/OWNER/REPO[/tree/REF|/commit/SHA|/releases/tag/TAG], ' +
              'https://gitlab.com/GROUP/PROJECT[/-/tree/REF], https://www.npmjs.com/package/NAME[/v/VERSION], an npm package (name, @scope/name, name@version) or a .zip/.tgz URL',
          })
          .options({
            'database-url': connectionOptions['database-url'],
            'base-dir': {
              type: 'string',
              describe:
                'Store a local plugin inside this directory as a file: URL relative to it (start and replay resolve it against their --base-dir); default: an absolute file: URL, as PostHog stored them (env BASE_DIR)',
              default: env('BASE_DIR'),
            },
            team: { type: 'number', default: 1, describe: 'Team id the config belongs to' },
            order: { type: 'number', describe: 'Position in the team chain (default: after the last one)' },
            config: {
              type: 'string',
              default: '{}',
              describe:
                "Plugin config as a JSON object of strings, checked against plugin.json's config (defaults filled in)",
            },
            name: { type: 'string', describe: 'Plugin name (default: plugin.json name, else the file name)' },
            disabled: { type: 'boolean', default: false, describe: 'Install without enabling the config' },
            upgrade: {
              type: 'boolean',
              default: false,
              describe:
                "Replace the code of the plugin installed from the same path or link (its configs stay; --config changes the team's)",
            },
            ...installRemoteOptions,
            ...announceOptions,
            ...sandboxOptions,
            ...logOptions,
          })
          .example('$0 install fixtures/plugins/add-property --team 1', 'a local folder (stored as a file: URL)')
          .example(
            '$0 install https://github.com/PostHog/currency-normalization-plugin',
            'the default branch, pinned to its current commit',
          )
          .example('$0 install @posthog/plugin-geoip@0.0.7', 'an npm package version')
          .example(
            '$0 install fixtures/plugins/add-property --upgrade',
            'new code for the plugin installed from that folder',
          )
          .epilog(
            'The plugin is loaded in an isolate first (without setupPlugin): one that does not compile or load is refused, nothing stored. Running workers are told on the reload channel.',
          ),
      async (argv) => {
        const { runInstall } = await import('./install');
        await runInstall(
          {
            source: argv.source,
            databaseUrl: argv['database-url'],
            baseDir: argv['base-dir'],
            team: argv.team,
            order: argv.order,
            config: argv.config,
            name: argv.name,
            disabled: argv.disabled,
            upgrade: argv.upgrade,
            remote: remoteOptionsFrom(argv),
            limits: limitsFrom(argv),
            fetch: fetchFrom(argv),
            announce: announceTargetFrom(argv),
          },
          loggerFor(argv),
        ).catch((err: Error) => {
          // A link that is not a plugin is an answer, not a usage error: the reason alone, exit 1.
          process.stderr.write(`posthog-plugins install: ${err.message}\n`);
          process.exit(1);
        });
      },
    )
    .command(
      'uninstall <ids..>',
      'Remove plugin configs (ids from `list`), and each plugin no config uses any more; running workers are told',
      (y) =>
        y
          .positional('ids', { type: 'number', array: true, demandOption: true, describe: 'Plugin config ids' })
          .options({ 'database-url': connectionOptions['database-url'], ...announceOptions, ...logOptions })
          .example('$0 uninstall 3', 'remove config #3 (and its plugin, when it was the last config using it)'),
      (argv) =>
        failsWith('uninstall', async () => {
          const { runUninstall } = await import('./uninstall');
          await runUninstall(configIds(argv.ids), argv['database-url'], announceTargetFrom(argv), loggerFor(argv));
        }),
    )
    .command(
      'enable <ids..>',
      'Enable plugin configs (ids from `list`); running workers are told',
      (y) =>
        y
          .positional('ids', { type: 'number', array: true, demandOption: true, describe: 'Plugin config ids' })
          .options({ 'database-url': connectionOptions['database-url'], ...announceOptions, ...logOptions }),
      (argv) =>
        failsWith('enable', async () => {
          const { runSetEnabled } = await import('./enable');
          await runSetEnabled(
            configIds(argv.ids),
            true,
            argv['database-url'],
            announceTargetFrom(argv),
            loggerFor(argv),
          );
        }),
    )
    .command(
      'disable <ids..>',
      'Disable plugin configs (ids from `list`): events skip them; running workers are told',
      (y) =>
        y
          .positional('ids', { type: 'number', array: true, demandOption: true, describe: 'Plugin config ids' })
          .options({ 'database-url': connectionOptions['database-url'], ...announceOptions, ...logOptions }),
      (argv) =>
        failsWith('disable', async () => {
          const { runSetEnabled } = await import('./enable');
          await runSetEnabled(
            configIds(argv.ids),
            false,
            argv['database-url'],
            announceTargetFrom(argv),
            loggerFor(argv),
          );
        }),
    )
    .command('config', "Show or change a plugin config's values", (y) =>
      y
        .command(
          'show <id>',
          'Print the config of a plugin config as JSON (secret fields masked)',
          (c) =>
            c
              .positional('id', { type: 'number', demandOption: true, describe: 'Plugin config id' })
              .options({ 'database-url': connectionOptions['database-url'], ...logOptions }),
          (argv) =>
            failsWith('config show', async () => {
              const { runConfigShow } = await import('./config-command');
              await runConfigShow(configIds([argv.id])[0]!, argv['database-url'], loggerFor(argv));
            }),
        )
        .command(
          'set <id> [pairs..]',
          "Change keys of a plugin config (KEY=VALUE; KEY= removes one), checked against the plugin's plugin.json; running workers are told",
          (c) =>
            c
              .positional('id', { type: 'number', demandOption: true, describe: 'Plugin config id' })
              .positional('pairs', {
                type: 'string',
                array: true,
                default: [],
                describe: 'KEY=VALUE pairs (values are strings, as PostHog stores them)',
              })
              .options({
                json: { type: 'string', describe: 'Keys to change as a JSON object (null removes a key)' },
                'database-url': connectionOptions['database-url'],
                ...announceOptions,
                ...logOptions,
              })
              .example('$0 config set 3 propertyName=source', 'one key')
              .example(`$0 config set 3 --json '{"propertyValue":"web"}'`, 'as JSON'),
          (argv) =>
            failsWith('config set', async () => {
              const { configChanges, runConfigSet } = await import('./config-command');
              await runConfigSet(
                configIds([argv.id])[0]!,
                configChanges(argv.pairs as string[], argv.json),
                argv['database-url'],
                announceTargetFrom(argv),
                loggerFor(argv),
              );
            }),
        )
        .demandCommand(1, 'Name a subcommand: show or set'),
    )
    .command(
      'order <ids..>',
      "Reorder a team's chain: the given configs run first, in this order, then the team's others as they were; running workers are told",
      (y) =>
        y
          .positional('ids', {
            type: 'number',
            array: true,
            demandOption: true,
            describe: 'Plugin config ids of one team',
          })
          .options({ 'database-url': connectionOptions['database-url'], ...announceOptions, ...logOptions })
          .example('$0 order 5 3', 'config #5 runs first, then #3, then the rest of that team'),
      (argv) =>
        failsWith('order', async () => {
          const { runOrder } = await import('./order');
          await runOrder(configIds(argv.ids), argv['database-url'], announceTargetFrom(argv), loggerFor(argv));
        }),
    )
    .command(
      'health',
      'Exit 0 if the `start` instance on this machine with the same --broker/--queue (or --health-file) is healthy, 1 if not, with one line saying why',
      (y) =>
        y
          .options({
            broker: connectionOptions.broker,
            queue: queueOptions.queue,
            ...healthFileOption,
            ...healthRuleOptions,
          })
          .epilog(
            'Unhealthy when: no status file; the supervisor process is gone; its status is older than --max-age-ms (it is stuck); it is stopping; ' +
              'no worker process is consuming (starting or all restarting); a worker has not answered heartbeats for --max-age-ms; ' +
              'a worker holds messages and has settled none for --stuck-after-ms. An idle worker is healthy. Needs neither the broker nor Redis.',
          ),
      async (argv) => {
        const { healthFileFor, runHealth } = await import('./health');
        const verdict = runHealth({
          file: healthFileFor(argv['health-file'], argv.broker, argv.queue),
          maxAgeMs: argv['max-age-ms'],
          stuckAfterMs: argv['stuck-after-ms'],
        });
        (verdict.healthy ? process.stdout : process.stderr).write(
          `${verdict.healthy ? 'healthy' : 'unhealthy'}: ${verdict.reason}\n`,
        );
        process.exitCode = verdict.healthy ? 0 : 1;
      },
    )
    .command(
      'list',
      'List plugin configs: team, order, plugin, enabled, last error',
      (y) =>
        y.options({
          'database-url': connectionOptions['database-url'],
          json: { type: 'boolean', default: false, describe: 'Print JSON' },
          ...logOptions,
        }),
      async (argv) => {
        const { runList } = await import('./list');
        await runList(argv['database-url'], argv.json, loggerFor(argv));
      },
    )
    .command(
      'doctor',
      'Check the plugin tables: which PostHog schema, where code and logs come from, every config that cannot run and why (exit 1 when none can)',
      (y) =>
        y.options({
          'database-url': connectionOptions['database-url'],
          'base-dir': connectionOptions['base-dir'],
          ...logOptions,
        }),
      async (argv) => {
        const { runDoctor } = await import('./doctor');
        const report = await runDoctor(argv['database-url'], argv['base-dir'], loggerFor(argv)).catch((err: Error) => {
          process.stderr.write(`posthog-plugins doctor: ${err.message}\n`);
          process.exit(1);
        });
        process.stdout.write(report.lines.join('\n') + '\n');
        process.exitCode = report.runnable > 0 ? 0 : 1;
      },
    )
    .command(
      'replay <files..>',
      'Run captured Celery messages (JSON lines of Redis envelopes) through the plugins, without a broker; never writes to the database',
      (y) =>
        y
          .positional('files', {
            type: 'string',
            array: true,
            demandOption: true,
            describe: 'JSON-lines files of raw envelopes',
          })
          .options({
            out: { type: 'string', describe: 'Write the process_event envelopes here (default: stdout)' },
            now: { type: 'string', describe: 'Judge `expires` against this ISO instant (default: now)' },
            strict: { type: 'boolean', default: false, describe: 'Exit with status 1 if any message was rejected' },
            'allow-load-errors': {
              type: 'boolean',
              default: false,
              describe: 'Exit 0 although a plugin config failed to load (it is left out of the chain); default: exit 1',
            },
            'database-url': connectionOptions['database-url'],
            'base-dir': connectionOptions['base-dir'],
            'output-queue': queueOptions['output-queue'],
            'batch-size': workerOptions['batch-size'],
            ...sandboxOptions,
            ...logOptions,
          }),
      async (argv) => {
        const { runReplayCommand } = await import('./replay-command');
        const summary = await runReplayCommand(
          {
            files: argv.files as string[],
            out: argv.out,
            now: argv.now,
            strict: argv.strict,
            outputQueue: argv['output-queue'],
            batchSize: argv['batch-size'],
            databaseUrl: argv['database-url'],
            baseDir: argv['base-dir'],
            limits: limitsFrom(argv),
            fetch: fetchFrom(argv),
            allowLoadErrors: argv['allow-load-errors'],
          },
          loggerFor(argv),
        );
        if ((argv.strict && summary.rejected > 0) || (summary.failedConfigs > 0 && !argv['allow-load-errors']))
          process.exitCode = 1;
      },
    )
    .demandCommand(
      1,
      'Name a command: start, migrate, install, uninstall, enable, disable, config, order, list, doctor, replay or health',
    )
    .strict()
    // An error from a command (a database that cannot be opened, a file that cannot be read) is one line, exit 1;
    // only a command line yargs cannot parse gets the usage text.
    .fail((msg, err, y) => {
      if (err) process.stderr.write(`posthog-plugins: ${err.message}\n`);
      else process.stderr.write(`${y.help().toString()}\n\n${msg}\n`);
      process.exit(1);
    })
    .help()
    .alias('h', 'help')
    .version()
    .parseAsync();
}

main().catch((err: Error) => {
  process.stderr.write(`posthog-plugins: ${err.message}\n`);
  process.exit(1);
});
