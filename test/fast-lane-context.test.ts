import { getEventListeners } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  createContextValues,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type UnaryResponse,
} from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import {
  GetJwksRequestSchema,
  type GetJwksResponse,
  GetJwksResponseSchema,
  TokenIntrospectionService,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import { rpcAdapter } from "../src/http/rpc-adapter.js";

// The lean lane against connect-node on what an interceptor or a handler can do with the call:
// replace the answer's headers, read the signal late, see the deadline or the client go. The
// same adapter is built with and without the lane, and each case must look the same on both.

/** What the handler does on each call, set by a case. */
let handlerDoes: (ctx: HandlerContext) => Promise<void> = async () => {};
/** What it answers, when a case says. */
let handlerAnswers: (() => GetJwksResponse) | undefined;

const impl = {
  async getJwks(_req: unknown, ctx: HandlerContext) {
    await handlerDoes(ctx);
    return handlerAnswers?.() ?? { keys: [] };
  },
};

const closers: (() => void)[] = [];
afterAll(() => {
  for (const close of closers) close();
});

async function start(lane: boolean, interceptors: Interceptor[] = []) {
  const shutdown = new AbortController();
  const spec = createServiceImplSpec(TokenIntrospectionService, impl as never).methods;
  const handler = rpcAdapter({
    logger: { error: () => {} } as never,
    routes: (r) => r.service(TokenIntrospectionService, impl as never),
    interceptors,
    shutdownSignal: shutdown.signal,
    fastLane: lane ? [spec.getJwks as MethodImplSpec] : undefined,
    contextValues: () => createContextValues(),
  });
  const server = http2.createServer(handler as never);
  const h1 = http.createServer(handler as never);
  closers.push(
    () => server.close(),
    () => h1.close(),
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => h1.listen(0, "127.0.0.1", r));
  const at = (s: http.Server | http2.Http2Server) =>
    `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  return { url: at(server), h1: at(h1), shutdown };
}

const path = "/keygate.v1.TokenIntrospectionService/GetJwks";
const message = toBinary(GetJwksRequestSchema, create(GetJwksRequestSchema));
const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, message.byteLength]), message]);
const framings = {
  grpc: { "content-type": "application/grpc", te: "trailers", body: envelope },
  "grpc-web": { "content-type": "application/grpc-web+proto", body: envelope },
  connect: { "content-type": "application/proto", body: Buffer.from(message) },
} as const;
type Framing = keyof typeof framings;

/** One call over h2c; its status, headers (no date), trailers and body. */
function call(url: string, framing: Framing, extra: Record<string, string> = {}) {
  const { body, ...headers } = framings[framing];
  const session = http2.connect(url);
  return new Promise<{ headers: object; trailers: object; body: string }>((resolve, reject) => {
    const stream = session.request({ ":method": "POST", ":path": path, ...headers, ...extra });
    let head: Record<string, unknown> = {};
    let trailers = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      const { date: _, ...rest } = h;
      head = rest;
    });
    stream.on("trailers", (t) => {
      trailers = { ...t };
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", reject);
    stream.on("end", () => {
      session.close();
      resolve({ headers: head, trailers, body: Buffer.concat(chunks).toString("base64") });
    });
    stream.end(body);
  });
}

/** The signal once it is aborted, or after 2 s if it is not. */
async function abortedOrNot(signal: AbortSignal): Promise<AbortSignal> {
  await new Promise((r) => {
    signal.addEventListener("abort", r);
    setTimeout(r, 2_000);
  });
  return signal;
}

/** The same case through connect-node and through the lane. */
async function onBoth<T>(run: (lane: boolean) => Promise<T>) {
  return { general: await run(false), lane: await run(true) };
}

const each = Object.keys(framings) as Framing[];

describe("the lean lane and connect-node: an interceptor's own headers and trailers", () => {
  const cases: Record<string, Interceptor> = {
    "spreads the answer with new headers": (next) => async (req) => {
      const res = await next(req);
      const header = new Headers(res.header);
      header.set("x-added", "1");
      const trailer = new Headers(res.trailer);
      trailer.set("x-trailer", "2");
      return { ...res, header, trailer };
    },
    "assigns the answer's headers": (next) => async (req) => {
      // connect-es's answer has plain properties: nothing stops an interceptor from this.
      const res = (await next(req)) as { -readonly [K in keyof UnaryResponse]: UnaryResponse[K] };
      res.header = new Headers({ "x-assigned": "1" });
      const trailer = new Headers(res.trailer);
      trailer.set("x-assigned", "2");
      res.trailer = trailer;
      return res;
    },
    "answers with an object of its own": (next) => async (req) => {
      const res = await next(req);
      return {
        stream: false,
        message: res.message,
        method: res.method,
        service: res.service,
        header: new Headers({ "x-new": "1" }),
        trailer: new Headers({ "grpc-status": "0" }),
      } as UnaryResponse;
    },
    "assigns the request's url and signal": (next) => async (req) => {
      const r = req as { url: string; signal: AbortSignal };
      r.url = "http://example.com/replaced";
      r.signal = new AbortController().signal;
      const res = await next(req);
      res.header.set("x-url", req.url);
      return res;
    },
  };
  for (const [name, interceptor] of Object.entries(cases)) {
    it.each(each)(`${name} (%s)`, async (framing) => {
      handlerDoes = async (ctx) => {
        for (const n of [1, 2, 3]) ctx.responseHeader.set(`x-${n}`, String(n));
      };
      const answers = await onBoth(async (lane) =>
        call((await start(lane, [interceptor])).url, framing),
      );
      handlerDoes = async () => {};
      expect(answers.lane).toEqual(answers.general);
      expect(JSON.stringify(answers.lane.headers) + JSON.stringify(answers.lane.trailers)).toMatch(
        /x-(added|assigned|new|url)/,
      );
    });
  }
});

describe("the lean lane and connect-node: the handler's signal", () => {
  it("read after the call is over: aborted, with nothing left listening", async () => {
    const answers = await onBoth(async (lane) => {
      let kept: { signal: AbortSignal } | undefined;
      const keep: Interceptor = (next) => async (req) => {
        kept = req;
        return next(req);
      };
      const server = await start(lane, [keep]);
      await call(server.url, "connect");
      await new Promise((r) => setTimeout(r, 20));
      const signal = kept?.signal as AbortSignal;
      return {
        aborted: signal.aborted,
        shutdownListeners: getEventListeners(server.shutdown.signal, "abort").length,
      };
    });
    expect(answers.lane).toEqual(answers.general);
    expect(answers.lane.aborted).toBe(true);
  });

  it("read first after the deadline: aborted with DEADLINE_EXCEEDED", async () => {
    const answers = await onBoth(async (lane) => {
      let seen: unknown;
      handlerDoes = async (ctx) => {
        await new Promise((r) => setTimeout(r, 60));
        seen = { aborted: ctx.signal.aborted, reason: String(ctx.signal.reason) };
      };
      await call((await start(lane)).url, "connect", { "connect-timeout-ms": "20" });
      return seen;
    });
    handlerDoes = async () => {};
    expect(answers.lane).toEqual(answers.general);
    expect(answers.lane).toMatchObject({ aborted: true, reason: /deadline_exceeded/ });
  });

  it("aborted when the client resets the stream, with connect-node's reason", async () => {
    const answers = await onBoth(async (lane) => {
      const server = await start(lane);
      const seen = new Promise((resolve) => {
        handlerDoes = async (ctx) => {
          const signal = await abortedOrNot(ctx.signal);
          resolve({ aborted: signal.aborted, reason: String(signal.reason) });
        };
      });
      const session = http2.connect(server.url);
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/proto",
      });
      stream.on("error", () => {});
      stream.end(Buffer.from(message));
      setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 50);
      const result = await seen;
      session.close();
      return result;
    });
    handlerDoes = async () => {};
    expect(answers.lane).toEqual(answers.general);
    expect(answers.lane).toMatchObject({ aborted: true, reason: /canceled.*CANCEL/ });
  });

  it("aborted when an HTTP/1.1 client closes its connection", async () => {
    const answers = await onBoth(async (lane) => {
      const server = await start(lane);
      const seen = new Promise((resolve) => {
        handlerDoes = async (ctx) => {
          resolve((await abortedOrNot(ctx.signal)).aborted);
        };
      });
      const req = http.request(`${server.h1}${path}`, {
        method: "POST",
        headers: { "content-type": "application/proto", "content-length": message.byteLength },
      });
      req.on("error", () => {});
      req.end(Buffer.from(message));
      setTimeout(() => req.destroy(), 50);
      return seen;
    });
    handlerDoes = async () => {};
    expect(answers.lane).toEqual(answers.general);
    expect(answers.lane).toBe(true);
  });
});

describe("the lean lane: answers it encodes once", () => {
  it("encodes a frozen answer once, and an answer that can change on every call", async () => {
    const server = await start(true);
    const answers = async (message: GetJwksResponse) => {
      handlerAnswers = () => message;
      const bodies: string[] = [];
      for (const framing of each) bodies.push((await call(server.url, framing)).body);
      return bodies;
    };
    const kept = Object.freeze(create(GetJwksResponseSchema, { jwks: { keys: ["first"] } }));
    const changing = create(GetJwksResponseSchema, { jwks: { keys: ["first"] } });
    const first = await answers(kept);
    expect(await answers(kept)).toEqual(first);
    expect(await answers(changing)).toEqual(first);
    // A new value in a message that is not frozen shows in the next answer.
    changing.jwks = { keys: ["second"] };
    const second = await answers(changing);
    handlerAnswers = undefined;
    for (const [i, body] of second.entries()) expect(body).not.toEqual(first[i]);
  });
});
