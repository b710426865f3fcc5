import { pino, type Logger, type LoggerOptions } from 'pino';
import { createRequire } from 'node:module';
import type PinoPretty from 'pino-pretty';

export type { Logger } from 'pino';

export interface LoggerSettings {
  service: string;
  node: string;
  version: string;
  level: string;
  /** Pretty output is honoured only when stdout is a terminal: production logs stay JSON. */
  pretty?: boolean;
  /** A destination stream (a log file; tests capture logs with it). */
  destination?: NodeJS.WritableStream;
  /** `text`: one human-readable line per record, uncoloured (upstream sysbox-mgr's --log-format text). */
  format?: 'json' | 'text';
}

/** One root logger per process, its base fields naming the daemon. */
export function createLogger(s: LoggerSettings): Logger {
  const options: LoggerOptions = {
    level: s.level,
    base: { service: s.service, node: s.node, version: s.version, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    serializers: { err: pino.stdSerializers.errWithCause },
  };
  if (s.format === 'text') {
    // Loaded only here: it costs every JSON-logging daemon about 2 MB of RSS.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
    return pino(options, pretty({ colorize: false, sync: true, destination: s.destination ?? 1 }));
  }
  if (s.destination) return pino(options, s.destination as pino.DestinationStream);
  if (s.pretty && process.stdout.isTTY) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true } } });
  }
  return pino(options, pino.destination({ sync: false }));
}

/** A logger that writes nothing: for tests and benchmarks that assert on behaviour, not logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
