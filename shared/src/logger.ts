import { pino, type Logger } from 'pino';

export type { Logger };

/** One logger per process, JSON lines on stderr so stdout stays free for command output. */
export function createLogger(name: string, level = process.env['SR_LOG_LEVEL'] ?? 'info'): Logger {
  return pino({ name, level }, pino.destination({ fd: 2, sync: false }));
}
