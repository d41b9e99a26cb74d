/**
 * Test fixtures: the real permitd binary on a free loopback port, a real HTTP upstream on
 * 127.0.0.1 that answers scripted statuses or enforces an OpenAI-style limit, and the two
 * transports every main test runs over. Waiting is on events (the server's "serving" log
 * line, a process exit, a request arriving), each bounded in time.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { once } from "node:events";
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Client, type ClientOptions, type ResourceSpec } from "../src/index.js";

/** clients/typescript (the tests run from dist/test/). */
export const PKG_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO = path.resolve(PKG_ROOT, "..", "..");

/** Every main test runs over both: gRPC (HTTP/2) and Connect (JSON over HTTP/1.1). */
export const TRANSPORTS = ["grpc", "connect"] as const;
export type TransportKind = (typeof TRANSPORTS)[number];

/** `$PERMITD_BIN`, else the repo's target/debug/permitd (scripts/test.sh builds it). */
export function permitdBinary(): string {
  const env = process.env["PERMITD_BIN"];
  const p = env ? path.resolve(env) : path.join(REPO, "target", "debug", "permitd");
  if (!existsSync(p)) {
    throw new Error(
      env
        ? `PERMITD_BIN=${env} is not a file`
        : `${p} is missing: build it (cargo build --locked) or set PERMITD_BIN (scripts/test.sh does this)`,
    );
  }
  return p;
}

/** A port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  await once(srv, "close");
  return port;
}

/** Resolves with `value` when `p` does, rejects with `what` after `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export interface Server {
  readonly baseUrl: string;
  readonly port: number;
  readonly logPath: string;
  logTail(n?: number): string;
  stop(): Promise<void>;
}

function waitReady(proc: ChildProcess, log: { text: string }, ms: number): Promise<void> {
  return within(
    new Promise<void>((resolve, reject) => {
      const onData = (): void => {
        if (/\bserving\b/.test(log.text)) {
          cleanup();
          resolve();
        }
      };
      const onExit = (code: number | null, signal: string | null): void => {
        cleanup();
        reject(new Error(`permitd exited (${code ?? signal}) before serving`));
      };
      const cleanup = (): void => {
        proc.stdout?.off("data", onData);
        proc.stderr?.off("data", onData);
        proc.off("exit", onExit);
      };
      proc.stdout?.on("data", onData);
      proc.stderr?.on("data", onData);
      proc.on("exit", onExit);
      onData();
    }),
    ms,
    "permitd to log 'serving'",
  );
}

async function tcpOpen(port: number): Promise<boolean> {
  const sock = net.connect(port, "127.0.0.1");
  try {
    await within(once(sock, "connect"), 2000, "tcp connect");
    return true;
  } catch {
    return false;
  } finally {
    sock.destroy();
  }
}

/**
 * Start `permitd serve` on a free port with its own data dir (and `config`, TOML, if given);
 * resolves once it logs "serving" and its port accepts connections.
 */
export async function startServer(config?: string): Promise<Server> {
  const bin = permitdBinary();
  const dir = mkdtempSync(path.join(tmpdir(), "permitd-ts-"));
  let last = "";
  for (let tries = 0; tries < 3; tries++) {
    // The free port may be taken between the probe and the bind: try another.
    const port = await freePort();
    const args = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", path.join(dir, `data-${port}`), "--log-format", "human"];
    if (config !== undefined) {
      const cfg = path.join(dir, `permitd-${port}.toml`);
      writeFileSync(cfg, config);
      args.push("--config", cfg);
    }
    const logPath = path.join(dir, `permitd-${port}.log`);
    const file = createWriteStream(logPath);
    const log = { text: "" };
    const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    for (const s of [proc.stdout, proc.stderr]) {
      s.on("data", (b: Buffer) => {
        log.text += b.toString();
        file.write(b);
      });
    }
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    const stop = async (): Promise<void> => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        try {
          await within(exited, 15_000, "permitd to stop");
        } catch {
          proc.kill("SIGKILL");
          await within(exited, 5_000, "permitd to die");
        }
      }
      file.end();
    };
    const server: Server = {
      baseUrl: `http://127.0.0.1:${port}`,
      port,
      logPath,
      logTail: (n = 40) => log.text.split("\n").slice(-n).join("\n"),
      stop: async () => {
        await stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
    try {
      await waitReady(proc, log, 30_000);
      // permitd logs "serving" once its listener is bound: the port must accept now.
      if (!(await tcpOpen(port))) throw new Error(`permitd logged "serving" but 127.0.0.1:${port} refuses connections`);
      return server;
    } catch (e) {
      last = `${(e as Error).message}\n${server.logTail()}`;
      await stop();
    }
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`permitd did not start:\n${last}`);
}

/** A client of `server` over one transport (Connect: JSON over HTTP/1.1). */
export function clientFor(server: Server, kind: TransportKind, extra: ClientOptions = {}): Client {
  const base: ClientOptions =
    kind === "grpc"
      ? { target: server.baseUrl, transport: "grpc" }
      : { target: server.baseUrl, transport: "connect", httpVersion: "1.1", useBinaryFormat: false };
  return new Client({ ...base, ...extra });
}

/** Define a fresh resource unique to the test; its limits are the truth unless the spec says otherwise. */
export async function makeResource(client: Client, tag: string, spec: ResourceSpec = {}): Promise<string> {
  const name = `ts:${tag.replace(/[^A-Za-z0-9._-]+/g, "-").slice(0, 60)}:${randomUUID().slice(0, 8)}`;
  await client.putResource(name, {
    limits: [{ dimension: "requests", amount: 100, periodMs: 60_000 }],
    limitsKnown: true,
    ...spec,
  });
  return name;
}

export function sha256Hex(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

export function readText(p: string): string {
  return readFileSync(p, "utf8");
}

// ---------------------------------------------------------------- the HTTP upstream

export interface Answer {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: unknown;
}

export interface Hit {
  readonly method: string;
  readonly path: string;
  readonly at: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

interface Limiter {
  readonly limit: number;
  readonly windowMs: number;
  readonly retryAfterS: number;
  start: number;
  count: number;
}

/**
 * A real HTTP server on 127.0.0.1:0. `script(path, ...answers)` scripts a path (the last
 * answer repeats); `limited(path, ...)` makes a path enforce `limit` requests per window and
 * say so in OpenAI's headers, answering 429 with Retry-After past it. An unscripted path
 * answers 200 with classic X-RateLimit headers. Every request is recorded.
 */
export class Upstream {
  readonly hits: Hit[] = [];
  #server: http.Server;
  #base = "";
  readonly #scripts = new Map<string, Answer[]>();
  readonly #limiters = new Map<string, Limiter>();

  private constructor() {
    this.#server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const p = req.url ?? "/";
        this.hits.push({ method: req.method ?? "GET", path: p, at: performance.now(), headers: req.headers, body: Buffer.concat(chunks).toString() });
        const a = this.#answer(p);
        const data = typeof a.body === "string" ? a.body : JSON.stringify(a.body ?? { ok: true, path: p });
        res.writeHead(a.status, { "content-type": "application/json", "content-length": Buffer.byteLength(data), ...a.headers });
        res.end(data);
      });
    });
  }

  static async start(): Promise<Upstream> {
    const up = new Upstream();
    up.#server.listen(0, "127.0.0.1");
    await once(up.#server, "listening");
    up.#base = `http://127.0.0.1:${(up.#server.address() as net.AddressInfo).port}`;
    return up;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    this.#server.close();
    await once(this.#server, "close");
  }

  get base(): string {
    return this.#base;
  }

  path(): string {
    return `/t/${randomUUID().slice(0, 12)}`;
  }

  url(p: string): string {
    return this.#base + p;
  }

  script(p: string, ...answers: Answer[]): string {
    this.#scripts.set(p, [...answers]);
    return this.url(p);
  }

  limited(p: string, limit: number, windowMs: number, retryAfterS: number): string {
    this.#limiters.set(p, { limit, windowMs, retryAfterS, start: 0, count: 0 });
    return this.url(p);
  }

  hitsOf(p: string): Hit[] {
    return this.hits.filter((h) => h.path === p);
  }

  #answer(p: string): Answer {
    const lim = this.#limiters.get(p);
    if (lim) {
      const now = performance.now();
      if (lim.count === 0 || now - lim.start >= lim.windowMs) {
        lim.start = now;
        lim.count = 0;
      }
      lim.count++;
      const resetS = Math.max(1, Math.ceil((lim.windowMs - (now - lim.start)) / 1000));
      const headers = {
        "x-ratelimit-limit-requests": String(lim.limit),
        "x-ratelimit-remaining-requests": String(Math.max(lim.limit - lim.count, 0)),
        "x-ratelimit-reset-requests": `${resetS}s`,
      };
      if (lim.count <= lim.limit) return { status: 200, headers, body: { ok: true, n: lim.count } };
      return { status: 429, headers: { ...headers, "retry-after": String(lim.retryAfterS) }, body: { error: "rate limited" } };
    }
    const q = this.#scripts.get(p);
    if (q && q.length > 0) return (q.length > 1 ? q.shift() : q[0]) as Answer;
    return {
      status: 200,
      headers: { "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "60" },
    };
  }
}

/** A promise and the functions that settle it. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
