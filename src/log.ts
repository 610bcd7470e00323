import { type DestinationStream, type Logger, pino } from "pino";
import pretty from "pino-pretty";

export type { Logger };

/**
 * Paths pino removes from every line. Code never logs secrets on purpose; this catches the
 * ones that would slip in through a logged object.
 */
const redact = [
  "password",
  "*.password",
  "*.currentPassword",
  "*.newPassword",
  "token",
  "*.token",
  "*.accessToken",
  "*.refreshToken",
  "*.code",
  "*.secret",
  "authorization",
  "*.authorization",
  "*.headers.authorization",
  "*.headers.cookie",
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "keygate" },
      redact: { paths: redact, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/**
 * Where the service's log goes: readable lines (pino-pretty) when stdout is a terminal, the
 * JSON lines that log collectors read otherwise.
 */
export function logDestination(
  stdout: NodeJS.WriteStream = process.stdout,
): DestinationStream | undefined {
  if (!stdout.isTTY) return undefined;
  return pretty({
    destination: stdout,
    sync: true,
    colorize: stdout.hasColors?.() ?? false,
    translateTime: "SYS:HH:MM:ss.l",
    ignore: "pid,hostname,service",
    singleLine: true,
  });
}
