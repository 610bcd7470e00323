import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";

/**
 * The calls a gateway makes on every request it passes: their successful calls are sampled in
 * the log (RPCs by "service/Method", the plain-HTTP forms by "METHOD path").
 */
export const hotPathMethods: ReadonlySet<string> = new Set([
  "keygate.v1.TokenIntrospectionService/Introspect",
  "keygate.v1.TokenIntrospectionService/IntrospectBatch",
  "keygate.v1.TokenIntrospectionService/GetJwks",
  "envoy.service.auth.v3.Authorization/Check",
  "grpc.health.v1.Health/Check",
  "POST /oauth2/introspect",
]);

/**
 * The one log line per call, written through one place. Errors are always written. A
 * successful hot-path call is written once in `sampleEvery` (the first of each method
 * included); the others are counted in keygate_calls_unlogged_total and summed up in a
 * "calls not logged" line every `summaryMs`, so the log still says what happened and the
 * metrics how often. Every other successful call is written too.
 */
export class CallLog {
  private readonly seen = new Map<string, number>();
  private unlogged = new Map<string, number>();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly options: { sampleEvery: number; summaryMs?: number; metrics?: Metrics },
  ) {
    if (options.sampleEvery > 1) {
      this.timer = setInterval(() => this.summarize(), options.summaryMs ?? 10_000);
      this.timer.unref();
    }
  }

  /** A successful call; `line` is built only when it is written. */
  ok(method: string, line: () => object): void {
    if (this.options.sampleEvery > 1 && hotPathMethods.has(method)) {
      const n = this.seen.get(method) ?? 0;
      this.seen.set(method, n + 1 === this.options.sampleEvery ? 0 : n + 1);
      if (n !== 0) {
        this.unlogged.set(method, (this.unlogged.get(method) ?? 0) + 1);
        this.options.metrics?.observeUnloggedCall(method);
        return;
      }
    }
    this.logger.info(line(), "call");
  }

  warn(line: object): void {
    this.logger.warn(line, "call");
  }

  error(line: object): void {
    this.logger.error(line, "call");
  }

  /** Writes the counts of the calls left out since the last summary, if any. */
  summarize(): void {
    if (this.unlogged.size === 0) return;
    const counts = Object.fromEntries(this.unlogged);
    this.unlogged = new Map();
    this.logger.info({ counts, sampleEvery: this.options.sampleEvery }, "calls not logged");
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.summarize();
  }
}
