import winston from 'winston';

export type Logger = winston.Logger;
export type LogFormat = 'pretty' | 'json';

/**
 * One winston logger for the process. Human-readable on a terminal, JSON lines otherwise when asked
 * (`--log-format json` / LOG_FORMAT=json). Logs go to stderr so that `replay` can write results to stdout.
 */
export function createLogger(level = 'info', format: LogFormat = 'pretty'): Logger {
  const pretty = winston.format.printf(({ level: lvl, message, timestamp, ...meta }) => {
    const rest = Object.keys(meta).length ? ' ' + JSON.stringify(meta) : '';
    return `${String(timestamp)} ${lvl} ${String(message)}${rest}`;
  });
  return winston.createLogger({
    level,
    format:
      format === 'json'
        ? winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json())
        : winston.format.combine(
            winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
            winston.format.errors({ stack: true }),
            ...(process.stderr.isTTY ? [winston.format.colorize()] : []),
            pretty,
          ),
    transports: [new winston.transports.Console({ stderrLevels: Object.keys(winston.config.npm.levels) })],
  });
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
