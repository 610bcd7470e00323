import http from "node:http";
import type { AddressInfo } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { startTestKeygate } from "./support/server.js";

interface OtlpSpan {
  traceId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: { stringValue?: string } }[];
}

/** An OTLP/HTTP collector on loopback that keeps the spans it is sent (JSON encoding). */
async function startCollector() {
  const spans: OtlpSpan[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString();
    });
    req.on("end", () => {
      if (req.url === "/v1/traces" && req.headers["content-type"]?.includes("json")) {
        const doc = JSON.parse(body);
        for (const rs of doc.resourceSpans ?? []) {
          for (const ss of rs.scopeSpans ?? []) spans.push(...(ss.spans ?? []));
        }
      }
      res.setHeader("content-type", "application/json");
      res.end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
    spans,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe("tracing", () => {
  // Starts and stops its own server inside the test.
  it("exports a server span per call over OTLP, continuing the caller's trace", {
    timeout: 120_000,
  }, async () => {
    const collector = await startCollector();
    const keygate = await startTestKeygate({ KEYGATE_OTLP_ENDPOINT: collector.url });
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    try {
      const auth = createClient(
        AuthService,
        createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
      );
      await auth
        .login(
          { email: "nobody@example.test", password: "wrong password", workspaceId: "" },
          { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
        )
        .catch(() => {});
    } finally {
      // Stopping flushes the batch.
      await keygate.stop();
    }
    const span = collector.spans.find((s) => s.name === "keygate.v1.AuthService/Login");
    expect(span?.traceId).toBe(traceId);
    expect(span?.parentSpanId).toBe("00f067aa0ba902b7");
    expect(span?.kind).toBe(2); // SERVER
    const attributes = Object.fromEntries(
      (span?.attributes ?? []).map((a) => [a.key, a.value.stringValue]),
    );
    expect(attributes).toMatchObject({
      "rpc.system": "connect_rpc",
      "rpc.method": "Login",
      "rpc.connect_rpc.error_code": expect.stringMatching(
        /^(invalid_argument|not_found|unauthenticated)$/,
      ),
    });
    await collector.stop();
  });
});
