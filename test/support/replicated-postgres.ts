import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { appendFile, chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./wait.js";

/**
 * Two PostgreSQL 15 clusters from Debian's binaries on loopback ports, in a temporary
 * directory: a primary and a synchronous streaming standby, as a managed HA database runs
 * them. Built with initdb/pg_ctl rather than pg_createcluster so that nothing is written to
 * /etc/postgresql or /var/lib/postgresql and removing the directory removes everything.
 * PostgreSQL refuses to run as root: as root, every binary runs as the `postgres` user.
 */
export const postgresBin = "/usr/lib/postgresql/15/bin";
const tools = ["initdb", "pg_ctl", "pg_basebackup", "postgres"];
const asRoot = process.getuid?.() === 0;
export const havePostgresBinaries =
  tools.every((t) => existsSync(path.join(postgresBin, t))) &&
  (!asRoot || (existsSync("/usr/sbin/runuser") && userExists("postgres")));

function userExists(name: string): boolean {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const run = promisify(execFile);
async function postgresTool(tool: string, args: string[]): Promise<void> {
  const binary = path.join(postgresBin, tool);
  await (asRoot ? run("runuser", ["-u", "postgres", "--", binary, ...args]) : run(binary, args));
}

export interface Node {
  readonly name: string;
  readonly port: number;
  readonly dataDir: string;
  readonly url: (database?: string) => string;
}

export async function query<T extends pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

async function settle<T>(what: string, ms: number, probe: () => Promise<T | undefined>) {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startReplicatedPostgres() {
  const root = await mkdtemp(path.join(tmpdir(), "keygate-ha-"));
  const ids = asRoot
    ? {
        uid: Number(execFileSync("id", ["-u", "postgres"]).toString()),
        gid: Number(execFileSync("id", ["-g", "postgres"]).toString()),
      }
    : undefined;
  if (ids) await chown(root, ids.uid, ids.gid);
  const started = new Set<Node>();

  const node = async (name: string): Promise<Node> => {
    const port = await freePort();
    const dataDir = path.join(root, name);
    return {
      name,
      port,
      dataDir,
      url: (database = "postgres") => `postgres://postgres@127.0.0.1:${port}/${database}`,
    };
  };
  // Later lines of postgresql.conf win, so a copied configuration is overridden by appending.
  const configure = (n: Node) =>
    appendFile(
      path.join(n.dataDir, "postgresql.conf"),
      [
        "",
        `port = ${n.port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${root}'`,
        // The standby's name in synchronous_standby_names (its walreceiver's application_name).
        `cluster_name = '${n.name}'`,
        "wal_level = replica",
        "max_wal_senders = 5",
        "max_connections = 200",
        "synchronous_commit = on",
        "hot_standby = on",
        // Durability across an OS crash is not what this tests; a process crash keeps the WAL.
        "fsync = off",
        "",
      ].join("\n"),
    );
  const start = async (n: Node) => {
    await postgresTool("pg_ctl", ["-D", n.dataDir, "-l", `${n.dataDir}.log`, "-w", "start"]);
    started.add(n);
  };
  /** A standby of `primary` in `n`'s place, from a fresh base backup; started. */
  const follow = async (n: Node, primary: Node) => {
    await rm(n.dataDir, { recursive: true, force: true });
    await postgresTool("pg_basebackup", [
      ...["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres"],
      ...["-D", n.dataDir, "-X", "stream", "-R", "--no-sync", "--checkpoint=fast"],
    ]);
    await configure(n);
    await start(n);
  };
  /** Makes `standby` the synchronous one of `primary` and waits until it is. */
  const synchronous = async (primary: Node, standby: Node) => {
    await query(primary.url(), `ALTER SYSTEM SET synchronous_standby_names = '${standby.name}'`);
    await query(primary.url(), "SELECT pg_reload_conf()");
    await settle(`${standby.name} synchronous`, 30_000, async () => {
      const rows = await query<{ sync_state: string }>(
        primary.url(),
        "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
        [standby.name],
      );
      return rows[0]?.sync_state === "sync" ? true : undefined;
    });
  };

  const a = await node("a");
  const b = await node("b");
  try {
    await postgresTool("initdb", [
      ...["-D", a.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
    ]);
    await configure(a);
    await start(a);
    await follow(b, a);
    await synchronous(a, b);
  } catch (error) {
    await stopAll();
    throw error;
  }

  async function stopAll() {
    for (const n of started) {
      await postgresTool("pg_ctl", ["-D", n.dataDir, "-m", "immediate", "stop"]).catch(() => {});
    }
    started.clear();
    await rm(root, { recursive: true, force: true });
  }

  return {
    a,
    b,
    root,
    query,
    /** Stops a server at once, as a crash would (no checkpoint, connections cut). */
    async crash(n: Node) {
      await postgresTool("pg_ctl", ["-D", n.dataDir, "-m", "immediate", "stop"]);
      started.delete(n);
    },
    async promote(n: Node) {
      await postgresTool("pg_ctl", ["-D", n.dataDir, "-w", "promote"]);
    },
    /** Rebuilds `n` as a synchronous standby of `primary` (a fresh base backup) and waits for it. */
    async rejoin(n: Node, primary: Node) {
      await follow(n, primary);
      await synchronous(primary, n);
    },
    settle,
    stop: stopAll,
  };
}

export type ReplicatedPostgres = Awaited<ReturnType<typeof startReplicatedPostgres>>;
