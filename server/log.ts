import type { LogLevel } from './config';

/** Structured JSON logging, one object per line on stdout (errors on stderr). Separate from the audit trail. */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  debug(message: string, fields?: Record<string, unknown>): void;
}

const RANK: Record<LogLevel, number> = { silent: 0, error: 1, info: 2, debug: 3 };

export function createLogger(level: LogLevel, now: () => number = Date.now): Logger {
  const write = (lvl: 'error' | 'info' | 'debug', message: string, fields?: Record<string, unknown>) => {
    if (RANK[level] < RANK[lvl]) return;
    const line = JSON.stringify({ time: new Date(now()).toISOString(), level: lvl, message, ...fields });
    (lvl === 'error' ? process.stderr : process.stdout).write(line + '\n');
  };
  return {
    info: (m, f) => write('info', m, f),
    error: (m, f) => write('error', m, f),
    debug: (m, f) => write('debug', m, f),
  };
}
