import { type DestinationStream, type Logger, pino } from "pino";
import pretty from "pino-pretty";

export type { Logger };

const censor = "[redacted]";

/** Field names that hold a secret wherever they appear, top level or one level down. */
const secretFields = new Set([
  "password",
  "currentPassword",
  "newPassword",
  "token",
  "accessToken",
  "refreshToken",
  "secret",
  "authorization",
  "cookie",
]);

/** A copy of `value` with the secret fields one level down censored (and `code`, as before). */
function censored(value: unknown): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return value;
  let copy: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(value)) {
    if (secretFields.has(k) || k === "code") {
      copy ??= { ...(value as Record<string, unknown>) };
      copy[k] = censor;
    } else if (k === "headers" && typeof v === "object" && v !== null) {
      copy ??= { ...(value as Record<string, unknown>) };
      copy[k] = censored(v);
    }
  }
  return copy ?? value;
}

/**
 * Serializers in place of redaction. Code never logs secrets on purpose; these catch the ones
 * that would slip in through a logged object, and cost nothing on lines that do not carry
 * these keys (pino calls a serializer only for a key that is present), unlike path redaction,
 * which walks every line.
 */
const serializers: Record<string, pino.SerializerFn> = {
  err: pino.stdSerializers.err,
  ...Object.fromEntries([...secretFields].map((k) => [k, () => censor])),
  ...Object.fromEntries(
    ["headers", "req", "request", "body", "user", "metadata"].map((k) => [k, censored]),
  ),
};

/**
 * Where the log goes: an asynchronous destination (standard output unless `dest` says
 * otherwise). Lines written while a write is under way are sent together in the next one, so a
 * busy server writes in batches instead of once per line, and the event loop never waits on
 * the write. What is buffered is written synchronously when the process exits.
 */
export function logDestination(dest: string | number = 1): ReturnType<typeof pino.destination> {
  return pino.destination({ dest, sync: false });
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "keygate" },
      serializers,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? logDestination(),
  );
}

/**
 * Where the service's log goes: readable lines (pino-pretty) when stdout is a terminal, the
 * JSON lines that log collectors read otherwise.
 */
export function serviceLogDestination(
  stdout: NodeJS.WriteStream = process.stdout,
): DestinationStream {
  if (!stdout.isTTY) return logDestination();
  return pretty({
    destination: stdout,
    sync: true,
    colorize: stdout.hasColors?.() ?? false,
    translateTime: "SYS:HH:MM:ss.l",
    ignore: "pid,hostname,service",
    singleLine: true,
  });
}
