/**
 * The process logger: pino, JSON lines on stderr (stdout is for command
 * output, e.g. `cat`). Level from CLIP_LOG_LEVEL (default "info").
 */
import pino from 'pino';

export const log = pino(
  { name: 'clip-native', level: process.env.CLIP_LOG_LEVEL ?? 'info' },
  pino.destination({ fd: 2, sync: true }),
);

export type Logger = typeof log;
