import { randomUUID } from "node:crypto";
import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";
import type { DatabasePool } from "slonik";
import type { Clock } from "../../clock.js";
import type { Logger } from "../../log.js";
import {
  claimDueLogouts,
  markLogoutDelivered,
  markLogoutFailed,
  type OwedLogoutRow,
} from "../../repositories/oauth-logouts.js";
import { workspaceIssuer } from "./authorize.js";

/**
 * OpenID Connect Back-Channel Logout 1.0: when a grant ends, for whatever reason, its client
 * gets a logout token at its backchannel_logout_uri. The rows are written by the database
 * (migration 025), so no path that ends a session can forget one; every instance sends,
 * each row claimed by one of them at a time, and a failed delivery is tried again with
 * growing delays before it is given up.
 */

export interface BackchannelDeps {
  readonly pool: DatabasePool;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly issuerBase: string;
  readonly idTokens: {
    signIdToken(input: {
      claims: Record<string, unknown>;
      ttlSeconds: number;
      typ?: string;
    }): Promise<{ token: string }>;
  };
  /** Whether loopback, private and link-local destinations are allowed (development). */
  readonly allowPrivateNetworks: boolean;
  readonly pollIntervalMs?: number;
}

const logoutEvent = "http://schemas.openid.net/event/backchannel-logout";
const sendTimeoutMs = 5_000;
const leaseMs = 30_000;
const maxInFlight = 32;
const perClientInFlight = 2;
/** Delays before the 2nd, 3rd… attempts; after the last one the logout is given up. */
const retryDelaysMs = [5_000, 30_000, 120_000, 600_000, 3_600_000];

/** Addresses a workspace admin must not make Keygate post to (SSRF), unless allowed. */
const privateNetworks = new BlockList();
for (const [network, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.168.0.0", 16],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const) {
  privateNetworks.addSubnet(network, prefix, "ipv4");
}
for (const [network, prefix] of [
  ["::", 128],
  ["::1", 128],
  ["fc00::", 7],
  ["fe80::", 10],
  ["ff00::", 8],
  ["::ffff:0:0", 96],
  // IPv4-compatible and NAT64 forms, which reach IPv4 addresses through the IPv6 stack.
  ["::", 96],
  ["64:ff9b::", 96],
  ["64:ff9b:1::", 48],
] as const) {
  privateNetworks.addSubnet(network, prefix, "ipv6");
}

export class BackchannelLogoutSender {
  private loop: Promise<void> | undefined;
  private stopping = false;
  private wakes = 0;
  private sleeper: (() => void) | undefined;
  private readonly pollIntervalMs: number;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly perClient = new Map<string, number>();

  constructor(private readonly deps: BackchannelDeps) {
    this.pollIntervalMs = deps.pollIntervalMs ?? 1_000;
  }

  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = this.run();
  }

  /** A session ended somewhere: look for logouts now rather than at the next poll. */
  wake(): void {
    this.wakes += 1;
    this.sleeper?.();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.sleeper?.();
    await this.loop;
    await Promise.allSettled([...this.inFlight]);
    this.loop = undefined;
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const seen = this.wakes;
      let claimed = 0;
      try {
        claimed = await this.tick();
      } catch (error) {
        this.deps.logger.warn({ err: error }, "could not look for back-channel logouts");
      }
      if (claimed > 0 || seen !== this.wakes || this.stopping) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.pollIntervalMs);
        timer.unref();
        this.sleeper = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.sleeper = undefined;
    }
  }

  /**
   * Claims what is due and starts sending it; answers how many it claimed. Deliveries run on
   * their own, two at most per client and `maxInFlight` in all, so a client that answers
   * slowly (or never) delays only its own logouts, not other workspaces'.
   */
  async tick(): Promise<number> {
    const room = maxInFlight - this.inFlight.size;
    if (room <= 0) return 0;
    const busy = [...this.perClient].filter(([, n]) => n >= perClientInFlight).map(([k]) => k);
    const rows = await claimDueLogouts(this.deps.pool, {
      now: this.deps.clock.now(),
      leaseMs,
      limit: room,
      perClient: perClientInFlight,
      busy,
    });
    for (const row of rows) {
      const key = `${row.workspace_id}/${row.client_id}`;
      this.perClient.set(key, (this.perClient.get(key) ?? 0) + 1);
      const sending: Promise<void> = this.deliver(row).finally(() => {
        this.inFlight.delete(sending);
        const left = (this.perClient.get(key) ?? 1) - 1;
        if (left <= 0) this.perClient.delete(key);
        else this.perClient.set(key, left);
        this.wake();
      });
      this.inFlight.add(sending);
    }
    return rows.length;
  }

  private async deliver(row: OwedLogoutRow): Promise<void> {
    const now = () => this.deps.clock.now();
    try {
      const uri = row.backchannel_logout_uri;
      if (uri === null) throw new Permanent("the client has no back-channel logout URI any more");
      await this.checkDestination(new URL(uri));
      const { token } = await this.deps.idTokens.signIdToken({
        typ: "logout+jwt",
        ttlSeconds: 120,
        claims: {
          iss: workspaceIssuer(this.deps.issuerBase, row.workspace_id),
          aud: row.client_id,
          sub: row.user_id,
          sid: row.session_id,
          jti: randomUUID(),
          events: { [logoutEvent]: {} },
        },
      });
      const res = await fetch(uri, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ logout_token: token }).toString(),
        // A redirect could lead anywhere, private addresses included: it counts as a failure.
        redirect: "manual",
        signal: AbortSignal.timeout(sendTimeoutMs),
      });
      await res.body?.cancel();
      if (!res.ok) throw new Error(`the client answered HTTP ${res.status}`);
      await markLogoutDelivered(this.deps.pool, { id: row.id, now: now() });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const delay = error instanceof Permanent ? undefined : retryDelaysMs[row.attempts - 1];
      const retryAt = delay === undefined ? null : new Date(now().getTime() + delay);
      this.deps.logger.warn(
        {
          clientId: row.client_id,
          workspaceId: row.workspace_id,
          attempt: row.attempts,
          retryAt,
          error: message,
        },
        retryAt === null ? "gave up a back-channel logout" : "back-channel logout failed; retrying",
      );
      await markLogoutFailed(this.deps.pool, {
        id: row.id,
        now: now(),
        retryAt,
        error: message,
      }).catch((e: unknown) =>
        this.deps.logger.warn({ err: e }, "could not record a failed logout"),
      );
    }
  }

  /** Refuses hosts on private networks unless allowed (the URL comes from a workspace admin). */
  private async checkDestination(url: URL): Promise<void> {
    if (this.deps.allowPrivateNetworks) return;
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const addresses = isIP(host)
      ? [{ address: host, family: isIP(host) }]
      : await lookup(host, { all: true });
    for (const { address, family } of addresses) {
      if (privateNetworks.check(address, family === 6 ? "ipv6" : "ipv4")) {
        throw new Permanent(
          `${url.hostname} is on a private network (KEYGATE_OIDC_LOGOUT_PRIVATE_NETWORKS)`,
        );
      }
    }
  }
}

class Permanent extends Error {}
