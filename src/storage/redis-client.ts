/**
 * A small Redis client (RESP2 over TCP) for the remote content cache.
 *
 * Why not a general client from npm: the cache tier needs fail-fast
 * semantics those are built to avoid. Every command here has a deadline
 * (a slow Redis must cost a read a few hundred milliseconds, then the read
 * falls through to the next tier), there is no offline queue (while Redis
 * is down a command fails at once instead of waiting for a reconnect), and
 * values are binary Buffers of up to a chunk (1 MiB) read without copying
 * them piecewise. The tier uses six commands (GET, SET, EXISTS, DEL, PING,
 * AUTH/SELECT), which a ~300-line client covers; a dependency would bring
 * more surface than that, and these semantics would still need wrapping.
 *
 * Redis Cluster: keys carry a hash tag (`clip:{<diffid>}:…`), so all of a
 * layer's keys live in one slot. The client sends to the seed node and
 * follows MOVED (remembering which node serves each tag) and ASK
 * redirections, so it works against a cluster given any one node's URL.
 *
 * A timed-out command destroys its connection: the replies on a connection
 * come in order, so after giving up on one the rest can't be matched. The
 * next command reconnects.
 */
import * as net from 'node:net';

export type RespValue = string | number | Buffer | null | RespValue[];

/** An error reply from Redis (`-ERR …`, `-MOVED …`). */
export class RedisReplyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedisReplyError';
  }
}

/** Redis could not be reached in time (refused, reset, timed out, closed). */
export class RedisUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedisUnavailableError';
  }
}

export interface RedisClientOptions {
  /** Deadline for one command's reply (ms). Default 500. */
  commandTimeoutMs?: number;
  /** Deadline for a TCP connect plus AUTH/SELECT (ms). Default 500. */
  connectTimeoutMs?: number;
}

interface RedisUrl {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db: number;
}

/** Parses `redis://[[user]:password@]host[:port][/db]`. Errors: a TypeError naming the problem. */
export function parseRedisUrl(text: string): RedisUrl {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`"${text}" is not a redis:// URL`);
  }
  if (url.protocol !== 'redis:') throw new TypeError(`"${text}": only redis:// URLs are supported (no TLS)`);
  if (!url.hostname) throw new TypeError(`"${text}" names no host`);
  const db = url.pathname && url.pathname !== '/' ? Number(url.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new TypeError(`"${text}": database must be a number`);
  const out: RedisUrl = { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 6379, db };
  if (url.username) out.username = decodeURIComponent(url.username);
  if (url.password) out.password = decodeURIComponent(url.password);
  return out;
}

type Parsed = { value: RespValue | RedisReplyError; end: number } | { need: number };

/** Parses one reply at `pos`; `need` is a lower bound on the bytes required when incomplete. */
function parseReply(buf: Buffer, pos: number): Parsed {
  if (pos >= buf.length) return { need: pos + 1 };
  const lineEnd = buf.indexOf('\r\n', pos, 'latin1');
  if (lineEnd < 0) return { need: buf.length + 1 };
  const type = buf[pos];
  const line = buf.toString('latin1', pos + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case 0x2b: // +
      return { value: line, end: next };
    case 0x2d: // -
      return { value: new RedisReplyError(line), end: next };
    case 0x3a: // :
      return { value: Number(line), end: next };
    case 0x24: {
      // $
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      if (buf.length < next + n + 2) return { need: next + n + 2 };
      return { value: buf.subarray(next, next + n), end: next + n + 2 };
    }
    case 0x2a: {
      // *
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      const items: RespValue[] = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, at);
        if ('need' in r) return r;
        if (r.value instanceof RedisReplyError) throw r.value;
        items.push(r.value);
        at = r.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new RedisUnavailableError(`protocol error: unexpected reply type byte 0x${type.toString(16)}`);
  }
}

interface Pending {
  resolve(value: RespValue): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One TCP connection to one Redis node. */
class RedisConnection {
  private socket: net.Socket | null = null;
  private connecting: Promise<void> | null = null;
  private readonly queue: Pending[] = [];
  private chunks: Buffer[] = [];
  private buffered = 0;
  private needed = 1;
  private dead = false;

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly url: RedisUrl,
    private readonly options: Required<RedisClientOptions>,
  ) {}

  get name(): string {
    return `${this.host}:${this.port}`;
  }

  private connect(): Promise<void> {
    if (this.socket && !this.dead) return Promise.resolve();
    if (this.connecting) return this.connecting;
    this.connecting = new Promise<void>((resolve, reject) => {
      this.dead = false;
      this.chunks = [];
      this.buffered = 0;
      this.needed = 1;
      const socket = net.connect({ host: this.host, port: this.port });
      socket.setNoDelay(true);
      const timer = setTimeout(() => {
        socket.destroy();
        fail(new RedisUnavailableError(`connect to redis ${this.name} timed out after ${this.options.connectTimeoutMs} ms`));
      }, this.options.connectTimeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        this.connecting = null;
        this.socket = null;
        reject(err instanceof RedisUnavailableError ? err : new RedisUnavailableError(`redis ${this.name}: ${err.message}`));
      };
      socket.once('error', fail);
      socket.once('connect', () => {
        socket.removeListener('error', fail);
        this.socket = socket;
        socket.on('data', (d: Buffer) => this.onData(d));
        socket.on('error', (err) => this.destroy(new RedisUnavailableError(`redis ${this.name}: ${err.message}`)));
        socket.on('close', () => this.destroy(new RedisUnavailableError(`redis ${this.name} closed the connection`)));
        const setup: Promise<RespValue>[] = [];
        if (this.url.password !== undefined) {
          setup.push(this.send(this.url.username ? ['AUTH', this.url.username, this.url.password] : ['AUTH', this.url.password]));
        }
        if (this.url.db) setup.push(this.send(['SELECT', String(this.url.db)]));
        Promise.all(setup).then(
          () => {
            clearTimeout(timer);
            this.connecting = null;
            resolve();
          },
          (err: Error) => {
            this.destroy(err);
            fail(err);
          },
        );
      });
    });
    return this.connecting;
  }

  /** Sends one command (connecting first if needed). Errors: RedisReplyError, RedisUnavailableError. */
  async command(args: Array<string | Buffer>): Promise<RespValue> {
    await this.connect();
    return this.send(args);
  }

  private send(args: Array<string | Buffer>): Promise<RespValue> {
    const socket = this.socket;
    if (!socket || this.dead) return Promise.reject(new RedisUnavailableError(`redis ${this.name} is not connected`));
    return new Promise<RespValue>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.destroy(new RedisUnavailableError(`redis ${this.name} did not answer ${String(args[0])} within ${this.options.commandTimeoutMs} ms`));
      }, this.options.commandTimeoutMs);
      this.queue.push({ resolve, reject, timer });
      // Small parts are joined; large values are written as they are (no copy).
      socket.cork();
      let head = `*${args.length}\r\n`;
      for (const arg of args) {
        if (typeof arg === 'string') {
          head += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
        } else {
          socket.write(`${head}$${arg.length}\r\n`);
          head = '';
          socket.write(arg);
          head = '\r\n';
        }
      }
      if (head) socket.write(head);
      process.nextTick(() => socket.uncork());
    });
  }

  private onData(data: Buffer): void {
    this.chunks.push(data);
    this.buffered += data.length;
    if (this.buffered < this.needed) return;
    let buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    let pos = 0;
    try {
      while (pos < buf.length) {
        const r = parseReply(buf, pos);
        if ('need' in r) {
          this.needed = r.need - pos;
          break;
        }
        pos = r.end;
        const p = this.queue.shift();
        if (!p) throw new RedisUnavailableError('protocol error: a reply nobody asked for');
        clearTimeout(p.timer);
        if (r.value instanceof RedisReplyError) p.reject(r.value);
        else p.resolve(r.value);
      }
    } catch (e) {
      this.destroy(e instanceof RedisUnavailableError ? e : new RedisUnavailableError(String(e)));
      return;
    }
    buf = buf.subarray(pos);
    // A value handed out above may be a view into `buf`; a fresh buffer holds the rest.
    this.chunks = buf.length ? [Buffer.from(buf)] : [];
    this.buffered = buf.length;
    if (this.buffered === 0) this.needed = 1;
  }

  /** Fails every pending command and drops the socket; the next command reconnects. */
  destroy(err: Error): void {
    if (this.dead && !this.socket) return;
    this.dead = true;
    const socket = this.socket;
    this.socket = null;
    socket?.destroy();
    for (const p of this.queue.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }
}

/**
 * A Redis client with cluster redirection. Commands for the same key tag go
 * to the node that last answered for it.
 */
export class RedisClient {
  private readonly seed: RedisUrl;
  private readonly options: Required<RedisClientOptions>;
  private readonly nodes = new Map<string, RedisConnection>();
  private readonly tagNode = new Map<string, string>();
  private closed = false;

  /** Nothing is sent until the first command. Errors: TypeError for a bad URL. */
  constructor(url: string, options: RedisClientOptions = {}) {
    this.seed = parseRedisUrl(url);
    this.options = { commandTimeoutMs: options.commandTimeoutMs ?? 500, connectTimeoutMs: options.connectTimeoutMs ?? 500 };
  }

  get address(): string {
    return `${this.seed.host}:${this.seed.port}`;
  }

  private node(address: string): RedisConnection {
    let conn = this.nodes.get(address);
    if (!conn) {
      const colon = address.lastIndexOf(':');
      const host = address.slice(0, colon).replace(/^\[|\]$/g, '');
      conn = new RedisConnection(host, Number(address.slice(colon + 1)), this.seed, this.options);
      this.nodes.set(address, conn);
    }
    return conn;
  }

  /**
   * Runs one command; `tag` is the key's hash tag, for routing in a cluster.
   * Errors: RedisReplyError (an error reply), RedisUnavailableError (down,
   * slow, closed).
   */
  async command(args: Array<string | Buffer>, tag?: string): Promise<RespValue> {
    if (this.closed) throw new RedisUnavailableError('the redis client is closed');
    let address = (tag !== undefined && this.tagNode.get(tag)) || this.address;
    for (let hop = 0; ; hop++) {
      try {
        return await this.node(address).command(args);
      } catch (e) {
        if (!(e instanceof RedisReplyError) || hop >= 3) throw e;
        const moved = /^(MOVED|ASK) \d+ (\S+)$/.exec(e.message);
        if (!moved) throw e;
        address = moved[2].startsWith(':') ? `${this.seed.host}${moved[2]}` : moved[2];
        if (moved[1] === 'MOVED') {
          if (tag !== undefined) this.tagNode.set(tag, address);
        } else {
          // ASK: this one command goes to the importing node, announced by ASKING.
          const conn = this.node(address);
          await conn.command(['ASKING']);
          return conn.command(args);
        }
      }
    }
  }

  /** GET: the value, or null when the key does not exist. */
  async get(key: string, tag?: string): Promise<Buffer | null> {
    const v = await this.command(['GET', key], tag);
    if (v === null || Buffer.isBuffer(v)) return v;
    throw new RedisReplyError(`GET ${key}: unexpected reply`);
  }

  /** SET key value [PX ms] [NX]: true when set (false when NX found the key). */
  async set(key: string, value: Buffer | string, tag?: string, options: { pxMs?: number; nx?: boolean } = {}): Promise<boolean> {
    const args: Array<string | Buffer> = ['SET', key, value];
    if (options.pxMs !== undefined) args.push('PX', String(options.pxMs));
    if (options.nx) args.push('NX');
    return (await this.command(args, tag)) !== null;
  }

  async del(keys: string[], tag?: string): Promise<number> {
    if (keys.length === 0) return 0;
    return Number(await this.command(['DEL', ...keys], tag));
  }

  async ping(): Promise<void> {
    await this.command(['PING']);
  }

  /** Closes every connection; later commands fail. */
  close(): void {
    this.closed = true;
    for (const conn of this.nodes.values()) conn.destroy(new RedisUnavailableError('the redis client is closed'));
    this.nodes.clear();
  }
}
