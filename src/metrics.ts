import {
  Counter,
  collectDefaultMetrics,
  Gauge,
  Histogram,
  type MetricConfiguration,
  Registry,
} from "prom-client";

/**
 * The Prometheus metrics of one Keygate instance (GET /metrics). Counters are incremented
 * where things happen; gauges are read from their sources when scraped.
 *
 * - keygate_rpc_calls_total{service,method,code}, keygate_rpc_duration_seconds{service,method}
 * - keygate_logins_total{outcome}: success, second_step, or the refusal's reason
 * - keygate_rate_limit_refusals_total{reason}: RATE_LIMITED or ACCOUNT_LOCKED, by RPC method
 * - keygate_calls_unlogged_total{method}: successful hot-path calls the log sampled out
 * - gauges registered by the composition (outbox, pool, hash queue, introspection)
 * - Node's defaults (event-loop lag, heap, GC, …) from prom-client
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly calls: Counter<"service" | "method" | "code">;
  private readonly duration: Histogram<"service" | "method">;
  private readonly logins: Counter<"outcome">;
  private readonly refusals: Counter<"reason" | "method">;
  private readonly unlogged: Counter<"method">;

  constructor() {
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    const registers = [this.registry];
    this.calls = new Counter({
      name: "keygate_rpc_calls_total",
      help: "RPC calls by service, method and status code.",
      labelNames: ["service", "method", "code"],
      registers,
    });
    this.duration = new Histogram({
      name: "keygate_rpc_duration_seconds",
      help: "RPC call duration (for streams, until they end).",
      labelNames: ["service", "method"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.logins = new Counter({
      name: "keygate_logins_total",
      help: "Login attempts by outcome (success, second_step, or the refusal's reason).",
      labelNames: ["outcome"],
      registers,
    });
    this.refusals = new Counter({
      name: "keygate_rate_limit_refusals_total",
      help: "Calls refused by a rate limit or a lockout.",
      labelNames: ["reason", "method"],
      registers,
    });
    this.unlogged = new Counter({
      name: "keygate_calls_unlogged_total",
      help: "Successful hot-path calls left out of the log by sampling (KEYGATE_LOG_SAMPLE_EVERY).",
      labelNames: ["method"],
      registers,
    });
  }

  /** A successful call that the log sampled out; `method` as the log names it. */
  observeUnloggedCall(method: string): void {
    this.unlogged.inc({ method });
  }

  /** One finished call; `code` in snake case ("ok", "invalid_argument", …). */
  observeCall(call: {
    service: string;
    method: string;
    code: string;
    seconds: number;
    reason?: string | undefined;
    loginStep?: boolean;
  }): void {
    this.calls.inc({ service: call.service, method: call.method, code: call.code });
    this.duration.observe({ service: call.service, method: call.method }, call.seconds);
    if (call.reason === "RATE_LIMITED" || call.reason === "ACCOUNT_LOCKED") {
      this.refusals.inc({ reason: call.reason, method: call.method });
    }
    if (call.service === "keygate.v1.AuthService" && call.method === "Login") {
      const outcome =
        call.code === "ok"
          ? call.loginStep
            ? "second_step"
            : "success"
          : (call.reason ?? call.code).toLowerCase();
      this.logins.inc({ outcome });
    }
  }

  /** A gauge read from its source at each scrape. */
  gauge(
    name: string,
    help: string,
    collect: (set: (value: number, labels?: Record<string, string>) => void) => unknown,
    labelNames: readonly string[] = [],
  ): void {
    const config: MetricConfiguration<string> & { collect(): Promise<void> } = {
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect(this: Gauge<string>) {
        await collect((value, labels) => {
          if (labels) this.set(labels, value);
          else this.set(value);
        });
      },
    };
    new Gauge(config);
  }

  /** A counter read from its source (a running total kept elsewhere) at each scrape. */
  counter(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect(this: Counter) {
        this.reset();
        this.inc(read());
      },
    });
  }

  contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
