import type { Logger } from "./log.js";

/**
 * What a start has started, stopped in reverse order: by close(), or as soon as the start
 * fails part-way, so that a failed start leaves no worker thread, timer, connection or socket
 * behind. Each stop runs even when one before it failed (that one is logged).
 */
export class StopStack {
  private readonly stops: { name: string; stop: (graceful: boolean) => unknown }[] = [];

  constructor(private readonly logger: Logger) {}

  /** `stop` is called once, with graceful true from close() and false after a failed start. */
  add(name: string, stop: (graceful: boolean) => unknown): void {
    this.stops.push({ name, stop });
  }

  async stopAll(graceful: boolean): Promise<void> {
    for (const { name, stop } of this.stops.splice(0).reverse()) {
      try {
        await stop(graceful);
      } catch (error) {
        this.logger.warn({ err: error, component: name }, "stopping failed");
      }
    }
  }
}
