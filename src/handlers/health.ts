import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import type { Readiness } from "../readiness.js";
import { streamLifetime } from "./stream-lifetime.js";

const watchIntervalMs = 1_000;

/** grpc.health.v1.Health: SERVING while this instance is ready (see Readiness). */
export class HealthService implements ServiceImpl<typeof Health> {
  constructor(
    private readonly readiness: Readiness,
    private readonly services: ReadonlySet<string>,
    /** A watch ends (OK) after about this long; the client watches again. */
    private readonly maxAgeMs: number = 30 * 60_000,
  ) {}

  private async status(): Promise<Status> {
    return (await this.readiness.check()).ready ? Status.SERVING : Status.NOT_SERVING;
  }

  async check(req: { service: string }) {
    if (req.service !== "" && !this.services.has(req.service)) {
      throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
    }
    return { status: await this.status() };
  }

  async *watch(req: { service: string }, ctx: { signal: AbortSignal }) {
    if (req.service !== "" && !this.services.has(req.service)) {
      yield { status: Status.SERVICE_UNKNOWN };
      return;
    }
    const signal = streamLifetime(ctx.signal, this.maxAgeMs);
    let last: Status | undefined;
    while (!signal.aborted) {
      const status = await this.status();
      if (status !== last) {
        last = status;
        yield { status };
      }
      // A draining instance ends its watches so that connections can close.
      if (this.readiness.isDraining) return;
      await sleep(watchIntervalMs, undefined, { signal }).catch(() => {});
    }
  }
}
