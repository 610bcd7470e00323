import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log.js";

export interface MetricsSource {
  contentType(): string;
  text(): Promise<string>;
}

export interface MetricsListener {
  listen(port: number, host: string): Promise<AddressInfo>;
  /** Stops listening and ends every connection (a scrape in flight is cut short). */
  close(): Promise<void>;
}

/**
 * GET /metrics in Prometheus format on a listener of its own. The counters tell who has an
 * account (a mail sent or not) and how logins end, so they stay off the public port: this
 * one binds to loopback unless told otherwise, for a scraper beside the process.
 */
export function createMetricsListener(metrics: MetricsSource, logger: Logger): MetricsListener {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end();
      return;
    }
    metrics.text().then(
      (text) => {
        res.writeHead(200, { "content-type": metrics.contentType(), "cache-control": "no-store" });
        res.end(req.method === "HEAD" ? undefined : text);
      },
      (error: unknown) => {
        logger.error({ err: error }, "metrics collection failed");
        res.writeHead(500, { "content-type": "text/plain" }).end("metrics unavailable\n");
      },
    );
  });
  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolve(server.address() as AddressInfo);
        });
      });
    },
    close() {
      return new Promise((resolve) => {
        if (!server.listening) {
          resolve();
          return;
        }
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
