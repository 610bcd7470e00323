import { type DestinationStream, type Logger, pino } from "pino";

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
