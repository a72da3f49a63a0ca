import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { connectionOptions, logOptions, observeOptions, pluginApiOptions, queueOptions, reloadOptions, sandboxOptions, supervisorOptions, workerOptions } from '../config';
import { installRemoteOptions, remoteOptionsFrom } from '../install/options';
import { healthFileOption, healthRuleOptions } from './health';
import { createLogger, type LogFormat, type Logger } from '../log';

/**
 * Entry point of the `posthog-plugins` command. Every command gets its own --help; every option can also
 * come from the environment (see src/config.ts).
 */
function loggerFor(argv: { 'log-level': string; 'log-format': string }): Logger {
  return createLogger(argv['log-level'], argv['log-format'] as LogFormat);
}

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('posthog-plugins')
    .usage('$0 <command> [options]\n\nRuns PostHog plugins on Celery process_event_with_plugins tasks and hands the results to Python Celery.')
    .command(
      'start',
      'Consume process_event_with_plugins, run the plugins, publish process_event (until SIGTERM), in supervised worker processes',
      (y) => y.options({ ...connectionOptions, ...queueOptions, ...reloadOptions, ...sandboxOptions, ...pluginApiOptions, ...workerOptions, ...observeOptions, ...supervisorOptions, ...healthFileOption, ...logOptions }),
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
        await runMigrate(argv['database-url'], loggerFor(argv));
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
            'base-dir': connectionOptions['base-dir'],
            team: { type: 'number', default: 1, describe: 'Team id the config belongs to' },
            order: { type: 'number', describe: 'Position in the team chain (default: after the last one)' },
            config: { type: 'string', default: '{}', describe: 'Plugin config as a JSON object' },
            name: { type: 'string', describe: 'Plugin name (default: plugin.json name, else the file name)' },
            disabled: { type: 'boolean', default: false, describe: 'Install without enabling the config' },
            ...installRemoteOptions,
            ...logOptions,
          })
          .example('$0 install fixtures/plugins/add-property --team 1', 'a local folder (stored as a file: URL)')
          .example('$0 install https://github.com/PostHog/currency-normalization-plugin', 'the default branch, pinned to its current commit')
          .example('$0 install @posthog/plugin-geoip@0.0.7', 'an npm package version'),
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
            remote: remoteOptionsFrom(argv),
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
      'health',
      'Exit 0 if the `start` instance on this machine with the same --broker/--queue (or --health-file) is healthy, 1 if not, with one line saying why',
      (y) =>
        y
          .options({ broker: connectionOptions.broker, queue: queueOptions.queue, ...healthFileOption, ...healthRuleOptions })
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
        (verdict.healthy ? process.stdout : process.stderr).write(`${verdict.healthy ? 'healthy' : 'unhealthy'}: ${verdict.reason}\n`);
        process.exitCode = verdict.healthy ? 0 : 1;
      },
    )
    .command(
      'list',
      'List plugin configs: team, order, plugin, enabled, last error',
      (y) => y.options({ 'database-url': connectionOptions['database-url'], json: { type: 'boolean', default: false, describe: 'Print JSON' }, ...logOptions }),
      async (argv) => {
        const { runList } = await import('./list');
        await runList(argv['database-url'], argv.json, loggerFor(argv));
      },
    )
    .command(
      'replay <files..>',
      'Run captured Celery messages (JSON lines of Redis envelopes) through the plugins, without a broker',
      (y) =>
        y
          .positional('files', { type: 'string', array: true, demandOption: true, describe: 'JSON-lines files of raw envelopes' })
          .options({
            out: { type: 'string', describe: 'Write the process_event envelopes here (default: stdout)' },
            now: { type: 'string', describe: 'Judge `expires` against this ISO instant (default: now)' },
            strict: { type: 'boolean', default: false, describe: 'Exit with status 1 if any message was rejected' },
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
            limits: {
              memoryLimitMb: argv['memory-limit-mb'],
              cpuTimeoutMs: argv['cpu-timeout-ms'],
              wallTimeoutMs: argv['wall-timeout-ms'],
              maxResultBytes: argv['max-result-bytes'],
            },
            fetch: { timeoutMs: argv['fetch-timeout-ms'], maxBytes: argv['fetch-max-bytes'], allow: argv['fetch-allow'] },
          },
          loggerFor(argv),
        );
        if (argv.strict && summary.rejected > 0) process.exitCode = 1;
      },
    )
    .demandCommand(1, 'Name a command: start, migrate, install, list, replay or health')
    .strict()
    .help()
    .alias('h', 'help')
    .version()
    .parseAsync();
}

main().catch((err: Error) => {
  process.stderr.write(`posthog-plugins: ${err.message}\n`);
  process.exit(1);
});
