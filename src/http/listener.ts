import { readFileSync } from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, {
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type ServerHttp2Stream,
} from "node:http2";
import net, { type AddressInfo } from "node:net";

import { Code } from "@connectrpc/connect";
import { ipBucket } from "../domain/ip-bucket.js";
import { refuse } from "./refusal.js";
import type { NodeHandlerFn } from "./types.js";

export type RequestHandler = NodeHandlerFn;

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** How long a new connection may stay silent before its first bytes decide its protocol. */
const sniffTimeoutMs = 10_000;

/** GOAWAY, then the socket is destroyed if the peer does not close its side within a second. */
function closeSession(session: Http2Session): void {
  session.close();
  setTimeout(() => session.destroy(), 1_000).unref();
}

/** What one client may hold open; see createListener. */
export interface ConnectionLimits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised on every HTTP/2 connection. */
  readonly maxConcurrentStreams: number;
  /** Open connections per client bucket (an IPv6 prefix, an IPv4 address, loopback). */
  readonly maxConnectionsPerIp: number;
  /**
   * A request's headers and body must arrive within this: a stalled HTTP/1.1 request gets 408
   * and its connection is closed, a stalled HTTP/2 stream is reset (CANCEL).
   */
  readonly requestReceiveTimeoutMs: number;
  /** An HTTP/2 connection with no stream open for this long is closed (GOAWAY). */
  readonly idleConnectionTimeoutMs: number;
  readonly ipv6PrefixLength: number;
  /** Peers that carry many clients' connections (trusted proxies) are not counted. */
  readonly exempt: (peer: string) => boolean;
}

const noLimits: ConnectionLimits = {
  maxConcurrentStreams: 100,
  maxConnectionsPerIp: Number.POSITIVE_INFINITY,
  requestReceiveTimeoutMs: 10_000,
  idleConnectionTimeoutMs: 60_000,
  ipv6PrefixLength: 64,
  exempt: () => true,
};

const tooManyConnections = "too many connections from this address";

/**
 * The answer on a connection over the per-IP limit: RESOURCE_EXHAUSTED as every client reads
 * it (429 for Connect and plain HTTP). The connection is closed after it.
 */
function refuseConnection(
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
) {
  refuse(req, res, Code.ResourceExhausted, tooManyConnections);
}

export interface Listener {
  /** Starts listening; resolves with the bound address. */
  listen(port: number, host: string): Promise<AddressInfo>;
  /** The TCP peer of a request, including HTTP/2 requests on replayed sockets. */
  peerAddress(req: IncomingMessage | Http2ServerRequest): string | undefined;
  /**
   * Stops accepting connections, asks open ones to finish (GOAWAY for HTTP/2, Connection:
   * close for HTTP/1.1) and destroys what is still open after the deadline.
   */
  close(deadlineMs: number): Promise<void>;
}

/**
 * One port for every protocol. Cleartext: the first bytes of a connection decide; the HTTP/2
 * preface goes to the HTTP/2 server (gRPC, Connect and gRPC-Web over h2c), anything else to
 * the HTTP/1.1 server (Connect, gRPC-Web, plain HTTP). TLS: ALPN decides between h2 and
 * http/1.1.
 */
export function createListener(
  handler: RequestHandler,
  options: { tls?: { certFile: string; keyFile: string } | undefined; limits?: ConnectionLimits },
): Listener {
  const limits = options.limits ?? noLimits;
  const settings = { maxConcurrentStreams: limits.maxConcurrentStreams };
  const sockets = new Set<net.Socket>();
  /** Open connections per client bucket, counted from accept to close. */
  const perClient = new Map<string, number>();
  /** Counts a new connection; false when its client already holds the most it may. */
  const admit = (socket: net.Socket): boolean => {
    const peer = socket.remoteAddress ?? "";
    if (limits.exempt(peer)) return true;
    const bucket = ipBucket(peer, limits.ipv6PrefixLength);
    const open = perClient.get(bucket) ?? 0;
    if (open >= limits.maxConnectionsPerIp) return false;
    perClient.set(bucket, open + 1);
    socket.once("close", () => {
      const left = (perClient.get(bucket) ?? 1) - 1;
      if (left > 0) perClient.set(bucket, left);
      else perClient.delete(bucket);
    });
    return true;
  };
  const sessions = new Set<Http2Session>();
  const sessionPeers = new WeakMap<Http2Session, string | undefined>();
  let tcp: net.Server;
  let h1: http.Server | undefined;

  /** Open streams per HTTP/2 connection, for the idle timeout. */
  const openStreams = new Map<Http2Session, number>();
  const trackSession = (session: Http2Session, peer: string | undefined) => {
    sessions.add(session);
    sessionPeers.set(session, peer);
    openStreams.set(session, 0);
    // Any frame restarts the timer; it fires for a connection that has been silent that long,
    // which is closed only when no stream is open on it (a quiet watch stream is not idle).
    session.setTimeout(limits.idleConnectionTimeoutMs, () => {
      if (openStreams.get(session) === 0) closeSession(session);
    });
    session.once("close", () => {
      sessions.delete(session);
      openStreams.delete(session);
    });
  };
  /**
   * Every HTTP/2 stream: counted on its connection, and reset if its request (headers and
   * body) has not all arrived within the receive timeout.
   */
  const trackStream = (stream: ServerHttp2Stream) => {
    const session = stream.session;
    if (session) openStreams.set(session, (openStreams.get(session) ?? 0) + 1);
    // A request without a body (END_STREAM on its headers) has arrived whole.
    const stalled = stream.endAfterHeaders
      ? undefined
      : setTimeout(() => {
          if (!stream.readableEnded) stream.close(http2.constants.NGHTTP2_CANCEL);
        }, limits.requestReceiveTimeoutMs);
    const received = () => clearTimeout(stalled);
    stream.once("end", received);
    stream.once("close", () => {
      received();
      if (session && openStreams.has(session))
        openStreams.set(session, (openStreams.get(session) ?? 1) - 1);
    });
  };
  /** Node's HTTP/1.1 limits on receiving a request, for a server that never listens itself. */
  const receiving = {
    headersTimeout: limits.requestReceiveTimeoutMs,
    requestTimeout: limits.requestReceiveTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, limits.requestReceiveTimeoutMs),
  };
  /**
   * Node checks those limits from a timer it starts when the server starts listening; these
   * servers are handed connections instead, so they are told they listen.
   */
  const receivingServers: http.Server[] = [];
  const checkReceiving = (server: http.Server) => {
    server.emit("listening");
    receivingServers.push(server);
    return server;
  };

  if (options.tls) {
    const secure = http2.createSecureServer(
      {
        cert: readFileSync(options.tls.certFile),
        key: readFileSync(options.tls.keyFile),
        allowHTTP1: true,
        settings,
      },
      handler,
    );
    secure.on("session", (session) => trackSession(session, session.socket?.remoteAddress));
    secure.on("connection", (socket: net.Socket) => {
      // Before the handshake there is no way to answer: over the limit, the socket is closed.
      if (!admit(socket)) {
        socket.destroy();
        return;
      }
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    });
    tcp = secure;
  } else {
    h1 = checkReceiving(http.createServer(receiving, handler as http.RequestListener));
    const h2 = http2.createServer({ settings }, handler);
    h2.on("stream", trackStream);
    // Connections over the per-IP limit get one answer that says so, then are closed.
    const refusedH1 = checkReceiving(
      http.createServer(receiving, (req, res) => {
        res.shouldKeepAlive = false;
        refuseConnection(req, res);
      }),
    );
    const refusedH2 = http2.createServer({ settings: { maxConcurrentStreams: 1 } }, (req, res) => {
      refuseConnection(req, res);
      res.once("finish", () => req.stream.session?.close());
    });
    let pendingPeer: string | undefined;
    // Emitted synchronously from the "connection" event below.
    h2.on("session", (session) => trackSession(session, pendingPeer));
    const plain = h1;
    tcp = net.createServer({ noDelay: true }, (socket) => {
      const admitted = admit(socket);
      // A refused connection gets its one answer or is closed, never held.
      if (!admitted) setTimeout(() => socket.destroy(), sniffTimeoutMs).unref();
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      socket.on("error", () => socket.destroy());
      socket.setTimeout(sniffTimeoutMs, () => socket.destroy());
      let head: Buffer = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
        const n = Math.min(head.length, preface.length);
        const h2c = head.subarray(0, n).equals(preface.subarray(0, n));
        if (h2c && head.length < preface.length) return;
        socket.off("data", onData);
        socket.pause();
        socket.setTimeout(0);
        if (h2c) {
          // The HTTP/2 server takes the bytes the sniffing read back from the socket's buffer.
          socket.unshift(head);
          pendingPeer = admitted ? socket.remoteAddress : undefined;
          (admitted ? h2 : refusedH2).emit("connection", socket);
          pendingPeer = undefined;
          return;
        }
        // The HTTP/1.1 server has its parser read the socket's native handle, past the
        // stream's buffer, so unshifted bytes would never reach it: it is handed the bytes
        // the sniffing read as the socket's first data instead. Either way the native socket
        // is kept: no JavaScript stream between the parser, nghttp2 and the network.
        (admitted ? plain : refusedH1).emit("connection", socket);
        socket.emit("data", head);
        socket.resume();
      };
      socket.on("data", onData);
    });
  }

  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, host, () => {
          tcp.off("error", reject);
          resolve(tcp.address() as AddressInfo);
        });
      });
    },
    peerAddress(req) {
      if ("stream" in req && req.stream)
        return sessionPeers.get(req.stream.session as Http2Session);
      return req.socket?.remoteAddress;
    },
    async close(deadlineMs) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      // Stops their receive checks; they never listened, so there is nothing else to close.
      for (const server of receivingServers) server.close(() => {});
      for (const session of sessions) session.close();
      h1?.closeIdleConnections();
      if (h1) {
        // Answer the requests in flight with Connection: close, then the sockets end.
        h1.on("request", (_req: IncomingMessage, res: ServerResponse) =>
          res.setHeader("connection", "close"),
        );
      }
      const timer = setTimeout(() => {
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
      }, deadlineMs);
      timer.unref();
      const idle = setInterval(() => h1?.closeIdleConnections(), 100);
      try {
        await closed;
      } finally {
        clearTimeout(timer);
        clearInterval(idle);
      }
    },
  };
}
