import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { requestIdKey } from "./context-keys.js";

const headerGetter: TextMapGetter<Headers> = {
  keys: (carrier) => {
    const names: string[] = [];
    carrier.forEach((_, name) => {
      names.push(name);
    });
    return names;
  },
  get: (carrier, key) => carrier.get(key) ?? undefined,
};

/**
 * OpenTelemetry tracing, off unless an OTLP endpoint is configured: one server span per RPC
 * (streams until they end), continuing the caller's W3C traceparent, exported over OTLP/HTTP
 * in batches. The provider belongs to the instance (not registered globally), so several
 * instances in one process keep their spans apart.
 */
export class Tracing {
  private readonly provider: TracerProvider;
  private readonly propagator = new W3CTraceContextPropagator();

  constructor(options: { endpoint: string; sampleRatio: number; serviceName?: string }) {
    this.provider = new TracerProvider({
      resource: resourceFromAttributes({ "service.name": options.serviceName ?? "keygate" }),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.sampleRatio) }),
      spanProcessors: [
        new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: options.endpoint }) }),
      ],
    });
  }

  interceptor(): Interceptor {
    const tracer = this.provider.getTracer("keygate");
    return (next) => async (req) => {
      const parent = this.propagator.extract(ROOT_CONTEXT, req.header, headerGetter);
      const span = tracer.startSpan(
        `${req.service.typeName}/${req.method.name}`,
        {
          kind: SpanKind.SERVER,
          attributes: {
            "rpc.system": "connect_rpc",
            "rpc.service": req.service.typeName,
            "rpc.method": req.method.name,
            "keygate.request_id": req.contextValues.get(requestIdKey),
          },
        },
        parent,
      );
      try {
        const res = await next(req);
        if (!res.stream) {
          finish(span, undefined);
          return res;
        }
        return { ...res, message: traced(res.message, span) };
      } catch (error) {
        finish(span, error);
        throw error;
      }
    };
  }

  /** Exports what is buffered and stops. */
  shutdown(): Promise<void> {
    return this.provider.shutdown();
  }
}

function finish(span: Span, error: unknown): void {
  if (error === undefined) {
    span.setAttribute("rpc.connect_rpc.error_code", "ok");
  } else {
    const ce = ConnectError.from(error);
    const code = Code[ce.code].replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
    span.setAttribute("rpc.connect_rpc.error_code", code);
    // A refusal is an answer, not a server fault: only internal and unknown mark the span.
    if (ce.code === Code.Internal || ce.code === Code.Unknown || ce.code === Code.Unavailable) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
    }
  }
  span.end();
}

async function* traced<T>(messages: AsyncIterable<T>, span: Span): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    finish(span, error);
    throw error;
  }
  finish(span, undefined);
}
