/**
 * The OpenID Provider's token endpoint under load from a C generator (wrk, HTTP/1.1, one
 * thread), beside a bare node:http server answering a token-sized JSON in the same run:
 *
 *   npm run bench -- oauth [ms=5000] [connections=16]
 *
 * - client_credentials: a confidential machine client with client_secret_basic, the same
 *   request every call (each answer is a freshly signed access token);
 * - authorization-code exchanges: each call a different code, minted beforehand through the
 *   provider-session fast path of /oauth2/authorize (one browser signed in once, a
 *   first-party client), exchanged with its PKCE verifier; at the peak (each connection
 *   sends its next call when the last is answered) and then paced at the target rate of
 *   300 a second (wrk's delay hook), where the latency is the exchange's own, not the queue
 *   of 16 connections over the rate.
 *
 * Targets (the OpenID Provider issue): client_credentials >= 1,000/s and code exchanges
 * >= 300/s on the two cores, p99 < 50 ms (at the peak for client_credentials; at the target
 * rate for exchanges, with the peak's p99 printed beside it). Keygate runs in this process on PGlite (or the
 * PostgreSQL of DATABASE_URL), rate limits lifted.
 */
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import { type CFigures, ensureCGenerators, wrk } from "./c-load.js";
import { benchDatabase, type Ratio, round, startBenchKeygate, verdict } from "./support.js";

const password = "correct horse battery staple";
const redirectUri = "http://127.0.0.1:9/callback";

/** A browser that keeps its cookies and follows nothing. */
class Jar {
  private readonly cookies = new Map<string, string>();
  async get(url: string): Promise<Response> {
    const res = await fetch(url, {
      redirect: "manual",
      headers: { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ") },
    });
    for (const cookie of res.headers.getSetCookie()) {
      const [pair = ""] = cookie.split(";");
      const eq = pair.indexOf("=");
      this.cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    return res;
  }
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function bareCeiling(ms: number, connections: number): Promise<CFigures> {
  const body = JSON.stringify({
    access_token: "x".repeat(700),
    token_type: "Bearer",
    expires_in: 900,
    scope: "orders.read",
  });
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const port = (server.address() as AddressInfo).port;
    return await wrk(
      {
        url: `http://127.0.0.1:${port}/token`,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "grant_type=client_credentials",
      },
      ms,
      connections,
    );
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 5_000);
  const connections = Number(args[1] ?? 16);
  ensureCGenerators();
  // The issuer names the real port: the provider's redirects point at it.
  const port = await freePort();
  const keygate = await startBenchKeygate({
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
  });
  try {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const auth = createClient(AuthService, transport);
    const oauth = createClient(OAuthService, transport);
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const workspaceId = keygate.workspaceId;
    const issuer = `${keygate.config.issuer.replace(/\/+$/, "")}/w/${workspaceId}`;
    const tokenUrl = `${issuer}/oauth2/token`;

    // ---- client_credentials ----
    const machine = await admin.createOAuthClient(
      {
        workspaceId,
        name: "Bench worker",
        confidential: true,
        grantTypes: ["client_credentials"],
        scopes: ["orders.read"],
      },
      root,
    );
    const basic = Buffer.from(
      `${machine.client?.clientId}:${machine.clientSecret}`,
      "utf8",
    ).toString("base64");
    const ceiling = await bareCeiling(ms, connections);
    const credentials = await wrk(
      {
        url: tokenUrl,
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${basic}`,
        },
        body: "grant_type=client_credentials&scope=orders.read",
      },
      ms,
      connections,
    );

    // ---- authorization-code exchanges ----
    const app = await admin.createOAuthClient(
      {
        workspaceId,
        name: "Bench app",
        confidential: true,
        firstParty: true,
        redirectUris: [redirectUri],
      },
      root,
    );
    const appBasic = Buffer.from(`${app.client?.clientId}:${app.clientSecret}`, "utf8").toString(
      "base64",
    );
    const email = `bench-${randomBytes(4).toString("hex")}@example.com`;
    await admin.provisionUser({ email, password, workspaceId, emailVerified: true }, root);
    const jar = new Jar();
    const verifier = randomBytes(32).toString("base64url");
    const challenge = createHash("sha256").update(verifier).digest("base64url");
    const authorizeUrl = () => {
      const url = new URL(`${issuer}/oauth2/authorize`);
      url.search = new URLSearchParams({
        response_type: "code",
        client_id: app.client?.clientId as string,
        redirect_uri: redirectUri,
        scope: "openid",
        code_challenge: challenge,
        code_challenge_method: "S256",
      }).toString();
      return url.toString();
    };
    // Signed in once; every later /authorize answers its code at once.
    const first = await jar.get(authorizeUrl());
    const requestId = new URL(first.headers.get("location") as string).searchParams.get(
      "request",
    ) as string;
    const login = await auth.login({ email, password, workspaceId });
    if (login.result.case !== "tokens") throw new Error("no tokens");
    const { redirectTo } = await oauth.acceptAuthorizationRequest(
      { requestId },
      { headers: { authorization: `Bearer ${login.result.value.accessToken}` } },
    );
    await jar.get(redirectTo);
    /** Codes for `perSecond` exchanges over the run and some to spare; minted 16 at a time. */
    const mint = async (perSecond: number) => {
      const wanted = Math.ceil((ms / 1000) * perSecond) + 200;
      const codes: string[] = [];
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (codes.length < wanted) {
            const res = await jar.get(authorizeUrl());
            const code = new URL(res.headers.get("location") as string).searchParams.get("code");
            if (code === null) throw new Error("the fast path answered no code");
            codes.push(code);
          }
        }),
      );
      return codes;
    };
    const exchange = (codes: readonly string[], delayMs?: number) =>
      wrk(
        {
          url: tokenUrl,
          method: "POST",
          headers: {
            "content-type": "application/x-www-form-urlencoded",
            authorization: `Basic ${appBasic}`,
          },
          bodies: codes.map((code) =>
            new URLSearchParams({
              grant_type: "authorization_code",
              code,
              redirect_uri: redirectUri,
              code_verifier: verifier,
            }).toString(),
          ),
          ...(delayMs === undefined ? {} : { delayMs }),
        },
        ms,
        connections,
      );
    const minting = performance.now();
    const codes = await mint(1_000);
    const mintedPerSecond = codes.length / ((performance.now() - minting) / 1000);
    // The peak: every connection sends its next exchange as soon as the last is answered, so
    // the latency there is mostly the queue (connections / rate).
    const exchanges = await exchange(codes);
    const exhausted = exchanges.calls > codes.length;
    // The target rate: each connection waits before each call so that all of them send 300 a
    // second; the latency is then the call's own. The wait leaves out the calls' own time, so
    // a first pass tells how long that is and the second waits that much less.
    const target = 300;
    let delayMs = Math.round((connections * 1000) / target);
    let paced = await exchange(await mint(target), delayMs);
    if (paced.perSecond > 0 && paced.perSecond < target * 0.97) {
      const callMs = (connections * 1000) / paced.perSecond - delayMs;
      delayMs = Math.max(1, Math.round((connections * 1000) / target - callMs));
      paced = await exchange(await mint(target * 1.2), delayMs);
    }

    const figures = {
      "bare node:http (token-sized JSON)": ceiling,
      client_credentials: credentials,
      "authorization_code exchange": exchanges,
      "authorization_code exchange at 300/s": paced,
    };
    console.log(
      `\noauth: the token endpoint over HTTP/1.1, wrk with ${connections} connections for ${ms} ms ` +
        `(${benchDatabase()}); ${codes.length} codes minted at ${round(mintedPerSecond)}/s` +
        (exhausted ? " — ran out of codes: the exchange figure counts failures" : ""),
    );
    console.table(
      Object.fromEntries(
        Object.entries(figures).map(([name, f]) => [
          name,
          {
            "per second": round(f.perSecond),
            "p50 ms": round(f.p50Ms, 2),
            "p99 ms": round(f.p99Ms, 2),
            failed: f.failed,
            "× ceiling": round(f.perSecond / ceiling.perSecond, 3),
          },
        ]),
      ),
    );
    const targets = {
      "client_credentials >= 1,000/s, p99 < 50 ms":
        credentials.perSecond >= 1_000 && credentials.p99Ms < 50 && credentials.failed === 0,
      "authorization-code exchanges >= 300/s at the peak": exchanges.perSecond >= 300,
      "authorization-code exchanges at 300/s: p99 < 50 ms":
        paced.p99Ms < 50 && paced.failed === 0 && exchanges.failed === 0,
      "authorization-code exchanges at the peak (16 in flight): p99 < 50 ms": exchanges.p99Ms < 50,
    };
    for (const [target, met] of Object.entries(targets)) console.log(`${target}: ${verdict(met)}`);
    const chart: Ratio[] = [
      {
        label: "client_credentials / 1,000 per s",
        value: round(credentials.perSecond / 1_000, 3),
        reference: "the target rate",
        target: { atLeast: 1 },
      },
      {
        label: "code exchanges / 300 per s",
        value: round(exchanges.perSecond / 300, 3),
        reference: "the target rate",
        target: { atLeast: 1 },
      },
    ];
    return { ms, connections, database: benchDatabase(), figures, targets, chart };
  } finally {
    await keygate.stop();
  }
}
