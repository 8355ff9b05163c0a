/**
 * A real redis-server for tests (Debian's redis-server), on a free
 * 127.0.0.1 port, with persistence off (`--save '' --appendonly no`) and a
 * temp working directory. start/stop/kill/restart, so tests can take Redis
 * away mid-read and bring it back on the same port; `maxmemory` with an
 * eviction policy, to test a Redis that evicts.
 *
 * A server never outlives the test process: stop() in the test's finally,
 * and an exit hook that SIGKILLs whatever is left.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { tempDir } from './fixtures';
import { freePort } from './registry-harness';

const REDIS_BIN = process.env.CLIP_REDIS_SERVER ?? '/usr/bin/redis-server';

export interface RedisOptions {
  /** e.g. '4mb': with `maxmemoryPolicy`, Redis evicts keys beyond it. */
  maxmemory?: string;
  /** Default 'allkeys-lru' when maxmemory is set. */
  maxmemoryPolicy?: string;
  /** Start as a Redis Cluster node (startRedisCluster joins the nodes). */
  cluster?: boolean;
}

export interface RedisHandle {
  port: number;
  /** `redis://127.0.0.1:PORT`. */
  url: string;
  dir: string;
  /** The running server's pid (changes on restart), or null when stopped. */
  pid(): number | null;
  /** Sends one command with redis-cli semantics (RESP), resolving to the raw reply text. */
  command(...args: string[]): Promise<string>;
  /** SIGKILL: the server vanishes mid-whatever, like a crash. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: persistence is off). */
  restart(): Promise<void>;
  /** SIGTERM and wait; removes the temp dir. */
  stop(): Promise<void>;
  log(): string;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function waitForPort(port: number, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.once('connect', () => {
        sock.write('PING\r\n');
      });
      sock.once('data', () => {
        sock.destroy();
        resolve();
      });
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`redis did not answer on port ${port}`));
        else setTimeout(attempt, 25);
      });
    };
    attempt();
  });
}

/** Starts redis-server on a free loopback port and waits for PONG. */
export async function startRedis(options: RedisOptions = {}): Promise<RedisHandle> {
  if (!fs.existsSync(REDIS_BIN)) throw new Error(`${REDIS_BIN} is missing: run "bash scripts/setup.sh" (apt-get install redis-server)`);
  const dir = tempDir('clip-redis-');
  const port = await freePort();
  const logFile = path.join(dir, 'redis.log');
  let child: ChildProcess | null = null;

  const launch = async () => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', logFile, '--daemonize', 'no', '--enable-debug-command', 'yes'];
    if (options.maxmemory) args.push('--maxmemory', options.maxmemory, '--maxmemory-policy', options.maxmemoryPolicy ?? 'allkeys-lru');
    if (options.cluster) args.push('--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'), '--cluster-node-timeout', '2000');
    const c = spawn(REDIS_BIN, args, { stdio: 'ignore' });
    live.add(c);
    c.once('exit', () => live.delete(c));
    child = c;
    try {
      await waitForPort(port, 10_000);
    } catch (e) {
      c.kill('SIGKILL');
      throw new Error(`${(e as Error).message}:\n${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''}`);
    }
  };

  const terminate = async (signal: NodeJS.Signals) => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill(signal);
    await exited;
  };

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    pid: () => child?.pid ?? null,
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''),
    command: (...args: string[]) =>
      new Promise<string>((resolve, reject) => {
        const sock = net.connect({ host: '127.0.0.1', port });
        let text = '';
        sock.once('connect', () => sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
        sock.on('data', (d) => {
          text += d.toString('latin1');
          if (text.endsWith('\r\n')) {
            sock.destroy();
            resolve(text);
          }
        });
        sock.once('error', reject);
      }),
    kill: () => terminate('SIGKILL'),
    restart: async () => {
      await terminate('SIGKILL');
      await launch();
    },
    stop: async () => {
      await terminate('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisClusterHandle {
  nodes: RedisHandle[];
  /** The node (index into nodes) that serves `key`: the one that does not answer MOVED. */
  ownerOf(key: string): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Starts `count` (>= 3) cluster nodes, no replicas, joined with
 * `redis-cli --cluster create`, and waits for cluster_state:ok on each.
 */
export async function startRedisCluster(count = 3): Promise<RedisClusterHandle> {
  const nodes: RedisHandle[] = [];
  const stop = async () => {
    for (const n of nodes) await n.stop();
  };
  try {
    for (let i = 0; i < count; i++) nodes.push(await startRedis({ cluster: true }));
    await new Promise<void>((resolve, reject) => {
      const c = spawn('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout!.on('data', (d) => (out += d));
      c.stderr!.on('data', (d) => (out += d));
      c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`redis-cli --cluster create failed:\n${out}`))));
    });
    const deadline = Date.now() + 20_000;
    for (const n of nodes) {
      while (!/cluster_state:ok/.test(await n.command('CLUSTER', 'INFO'))) {
        if (Date.now() > deadline) throw new Error('the cluster did not reach cluster_state:ok');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    nodes,
    stop,
    async ownerOf(key: string) {
      for (let i = 0; i < nodes.length; i++) {
        if (!(await nodes[i].command('GET', key)).startsWith('-MOVED')) return i;
      }
      throw new Error(`no node serves ${key}`);
    },
  };
}
