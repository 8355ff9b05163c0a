/**
 * Real registries for tests: starts Debian's docker-registry (the CNCF
 * Distribution registry, 2.8) on 127.0.0.1 with a temp config and storage,
 * optionally behind htpasswd Basic auth or token auth (with a token server
 * that runs in the test process and signs RS256 JWTs the registry verifies
 * through an x5c certificate chain), pushes OCI layouts into it with skopeo,
 * and puts a small HTTP proxy in front of it that can inject faults.
 *
 * The registry must never outlive the test process: each one runs under a
 * tiny shell wrapper that kills it when the test process's end of a pipe
 * closes (which happens even on SIGKILL), stop() kills it explicitly, and an
 * exit hook kills whatever is left.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, createPrivateKey, KeyObject, randomUUID, sign } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { indexImage } from '../src/index/build';
import { sh, tempDir } from './fixtures';

const execFileAsync = promisify(execFile);

export interface Credentials {
  username: string;
  password: string;
}

export interface RegistryHandle {
  /** `127.0.0.1:PORT`: the host part of image references (`${host}/demo:bookworm`). */
  host: string;
  port: number;
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** Temp dir with the config, storage and log. */
  dir: string;
  /** What skopeo pushes with by default (basic/token registries). */
  credentials?: Credentials;
  /**
   * Copies an image into the registry with skopeo: `push('oci:/dir:tag', 'demo:tag')`.
   * `all` copies every platform of an index (`skopeo copy --all`).
   */
  push(ociLayoutRef: string, repoTag: string, options?: { creds?: Credentials; all?: boolean }): Promise<void>;
  /** The registry's log so far (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  auth?: 'none' | 'basic' | 'token';
  /** Basic auth users (htpasswd -B). Default: one user, clip / clip-secret. */
  users?: Credentials[];
  /** Token auth: the token server to trust (required for auth 'token'). */
  tokenServer?: TokenServer;
}

const DEFAULT_USER: Credentials = { username: 'clip', password: 'clip-secret' };
const REGISTRY_BIN = process.env.CLIP_DOCKER_REGISTRY ?? '/usr/bin/docker-registry';

/** Registries still running (pid → temp dir), killed on exit if a test forgot (or crashed before) stop(). */
const live = new Map<number, string>();
process.on('exit', () => {
  for (const [pid, dir] of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const scratch: string[] = [];
process.on('exit', () => {
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});

/** A temp dir removed when the test process exits. */
export function scratchDir(prefix = 'clip-test-'): string {
  const dir = tempDir(prefix);
  scratch.push(dir);
  return dir;
}

/** A TCP port free right now on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

// $0 = config, $1 = log file, $2 = the registry binary. Prints the
// registry's pid, then waits for it.
// The watcher blocks on our stdin (fd 3) and kills the registry at EOF, i.e.
// when the test process closes the pipe or dies.
const WRAPPER = `
exec 3<&0 2>>"$1"
"$2" serve "$0" </dev/null >>"$1" 2>&1 3<&- &
pid=$!
echo "$pid"
( cat <&3 >/dev/null; kill "$pid" 2>/dev/null ) &
wait "$pid"
`;

/**
 * Starts a registry on a free loopback port and waits until /v2/ answers.
 * Errors: throws with the registry's log if it does not come up in 15 s.
 */
export async function startRegistry(options: StartRegistryOptions = {}): Promise<RegistryHandle> {
  if (!fs.existsSync(REGISTRY_BIN)) {
    throw new Error(`${REGISTRY_BIN} is missing: run "bash scripts/setup.sh" (apt-get install docker-registry)`);
  }
  const auth = options.auth ?? 'none';
  const dir = tempDir('clip-registry-');
  const port = await freePort();
  const logFile = path.join(dir, 'registry.log');
  let authYaml = '';
  let credentials: Credentials | undefined;
  if (auth === 'basic') {
    const users = options.users ?? [DEFAULT_USER];
    credentials = users[0];
    const htpasswd = users.map((u) => sh(`htpasswd -Bbn '${u.username}' '${u.password}'`).toString().trim()).join('\n');
    fs.writeFileSync(path.join(dir, 'htpasswd'), `${htpasswd}\n`);
    authYaml = `auth:\n  htpasswd:\n    realm: clip-test\n    path: ${path.join(dir, 'htpasswd')}\n`;
  } else if (auth === 'token') {
    const ts = options.tokenServer;
    if (!ts) throw new Error('startRegistry({ auth: "token" }) needs a tokenServer');
    credentials = ts.users[0];
    authYaml =
      `auth:\n  token:\n    realm: ${ts.realm}\n    service: ${ts.service}\n    issuer: ${ts.issuer}\n` +
      `    rootcertbundle: ${ts.certFile}\n`;
  }
  const config =
    `version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n` +
    `storage:\n  filesystem:\n    rootdirectory: ${path.join(dir, 'data')}\n  delete:\n    enabled: true\n` +
    `http:\n  addr: 127.0.0.1:${port}\n  secret: clip-test-secret\n${authYaml}`;
  const configFile = path.join(dir, 'config.yml');
  fs.writeFileSync(configFile, config);

  const wrapper = spawn('/bin/sh', ['-c', WRAPPER, configFile, logFile, REGISTRY_BIN], { stdio: ['pipe', 'pipe', 'inherit'] });
  const pid = await firstLine(wrapper);
  live.set(pid, dir);
  const exited = new Promise<void>((resolve) => wrapper.once('exit', () => resolve()));
  let running = true;
  void exited.then(() => {
    running = false;
    live.delete(pid);
  });
  const readLog = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '');

  const stop = async () => {
    if (running) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 5000);
      await exited;
      clearTimeout(timer);
    }
    wrapper.stdin?.end(); // releases the watcher
    fs.rmSync(dir, { recursive: true, force: true });
  };

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (!running) throw new Error(`docker-registry exited at start-up:\n${readLog()}`);
    const status = await probe(`${url}/v2/`);
    if (status === 200 || status === 401) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not answer on ${url} within 15 s:\n${readLog()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  const host = `127.0.0.1:${port}`;
  return {
    host,
    port,
    url,
    dir,
    credentials,
    log: readLog,
    stop,
    async push(ociLayoutRef, repoTag, pushOptions = {}) {
      const creds = pushOptions.creds ?? credentials;
      const args = ['copy', '--quiet', '--dest-tls-verify=false'];
      if (pushOptions.all) args.push('--all');
      if (creds) args.push('--dest-creds', `${creds.username}:${creds.password}`);
      args.push(ociLayoutRef, `docker://${host}/${repoTag}`);
      try {
        // Async: a token server in this process must keep answering while skopeo runs.
        await execFileAsync('skopeo', args, { maxBuffer: 1 << 24 });
      } catch (e) {
        const err = e as { stderr?: string; message: string };
        throw new Error(`skopeo ${args.join(' ')} failed: ${err.stderr ?? err.message}\nregistry log:\n${readLog().slice(-4000)}`);
      }
    },
  };
}

function firstLine(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout?.on('data', (d: Buffer) => {
      text += d.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) resolve(Number(text.slice(0, nl)));
    });
    child.once('exit', (code) => reject(new Error(`registry wrapper exited (${code}) before starting the registry`)));
  });
}

function probe(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.setTimeout(1000, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

// ---------------------------------------------------------------------------
// Token server

export interface TokenScope {
  type: string;
  name: string;
  actions: string[];
}

/** Decides what a token grants: return the scopes to grant, or 'deny' for a 401. */
export type TokenPolicy = (user: string | null, requested: TokenScope[]) => TokenScope[] | 'deny';

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate the registry trusts (rootcertbundle). */
  certFile: string;
  users: Credentials[];
  /** Every token request: who asked (null: anonymous), for what, and what was answered. */
  requests: Array<{ user: string | null; scopes: TokenScope[]; status: number }>;
  /** Replaces the policy (default: users get what they ask for, anonymous gets pull). */
  setPolicy(policy: TokenPolicy): void;
  /** The expires_in (seconds) of tokens from now on (default 300). */
  setExpiresIn(seconds: number): void;
  stop(): Promise<void>;
}

const base64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/**
 * Starts a Docker token server (the protocol of docker/distribution's token
 * auth) on a free loopback port. Its key and self-signed certificate are made
 * with openssl; tokens carry the certificate as an `x5c` header so the
 * registry can check them against its rootcertbundle.
 */
export async function startTokenServer(options: { users?: Credentials[] } = {}): Promise<TokenServer> {
  const dir = tempDir('clip-token-');
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  sh(
    `openssl req -x509 -newkey rsa:2048 -nodes -keyout '${keyFile}' -out '${certFile}' -days 2 -subj /CN=clip-test-token 2>/dev/null`,
  );
  const key: KeyObject = createPrivateKey(fs.readFileSync(keyFile));
  // The PEM body is the base64 of the DER certificate: exactly what x5c wants.
  const certDer = fs
    .readFileSync(certFile, 'utf8')
    .replace(/-----(BEGIN|END) CERTIFICATE-----/g, '')
    .replace(/\s+/g, '');
  const users = options.users ?? [DEFAULT_USER];
  const service = 'clip-test-registry';
  const issuer = 'clip-test-issuer';
  const requests: TokenServer['requests'] = [];
  let expiresIn = 300;
  let policy: TokenPolicy = (user, requested) =>
    user !== null ? requested : requested.map((s) => ({ ...s, actions: s.actions.filter((a) => a === 'pull') }));

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const scopes: TokenScope[] = url.searchParams.getAll('scope').flatMap((s) => parseScope(s));
    let user: string | null = null;
    const authz = req.headers.authorization;
    const answer = (status: number, body: unknown) => {
      requests.push({ user, scopes, status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (authz?.startsWith('Basic ')) {
      const decoded = Buffer.from(authz.slice(6), 'base64').toString();
      const colon = decoded.indexOf(':');
      const name = decoded.slice(0, colon);
      const match = users.find((u) => u.username === name && u.password === decoded.slice(colon + 1));
      if (!match) return answer(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad username or password' }] });
      user = name;
    }
    if (url.searchParams.get('service') !== service) return answer(400, { errors: [{ code: 'DENIED', message: 'wrong service' }] });
    const granted = policy(user, scopes);
    if (granted === 'deny') return answer(401, { errors: [{ code: 'DENIED', message: 'access denied by policy' }] });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer] };
    const claims = {
      iss: issuer,
      sub: user ?? '',
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access: granted,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(signingInput), key);
    const token = `${signingInput}.${base64url(signature)}`;
    answer(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() });
  });
  const port = await listen(server);
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    users,
    requests,
    setPolicy(p) {
      policy = p;
    },
    setExpiresIn(seconds) {
      expiresIn = seconds;
    },
    async stop() {
      await closeServer(server);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `repository:demo:pull,push` → one scope. */
function parseScope(text: string): TokenScope[] {
  return text
    .split(' ')
    .filter(Boolean)
    .map((s) => {
      const lastColon = s.lastIndexOf(':');
      const firstColon = s.indexOf(':');
      return { type: s.slice(0, firstColon), name: s.slice(firstColon + 1, lastColon), actions: s.slice(lastColon + 1).split(',').filter(Boolean) };
    });
}

// ---------------------------------------------------------------------------
// Fault-injecting proxy

export interface ProxyRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
}

/** What the proxy does with one request. */
export type ProxyAction =
  /** Forward as is, minus the named request headers (e.g. 'range', to play a registry without Range support). */
  | { kind: 'forward'; dropHeaders?: string[] }
  /** Answer with this status (and an empty JSON error body) without asking upstream. */
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  /** Forward, but send only the first `after` body bytes, then cut the connection. */
  | { kind: 'truncate'; after: number }
  /** Forward, but stop sending after `after` body bytes and hold the connection open. */
  | { kind: 'stall'; after: number }
  /**
   * Forward, re-cutting the body into pieces of the sizes `pieceSize` returns
   * (called once per piece), each written on its own event-loop turn so
   * the client tends to receive them apart: a body chunked unlike upstream's.
   */
  | { kind: 'rechunk'; pieceSize: () => number }
  /** Forward, with the body byte at `at` XOR-ed with 0xff. */
  | { kind: 'corrupt'; at: number }
  /** Answer with a redirect to `location`. */
  | { kind: 'redirect'; location: string; status?: number };

export interface FaultProxy {
  url: string;
  host: string;
  port: number;
  /** Requests seen, with the headers as they arrived. */
  requests: ProxyRequest[];
  /** Decides each request's fate (default: forward). */
  setHandler(handler: (req: ProxyRequest) => ProxyAction): void;
  /** Response body bytes sent back to clients so far. */
  bodyBytes(): number;
  stop(): Promise<void>;
}

/**
 * Starts an HTTP proxy on a free loopback port that forwards to `target`
 * (e.g. a registry's url), applying the handler's faults. `addHeaders` are
 * added to every forwarded request (e.g. credentials, to play a blob store
 * that authorises by URL and must not receive the client's Authorization).
 */
export async function startFaultProxy(target: string, options: { addHeaders?: Record<string, string> } = {}): Promise<FaultProxy> {
  const upstream = new URL(target);
  const requests: ProxyRequest[] = [];
  let handler: (req: ProxyRequest) => ProxyAction = () => ({ kind: 'forward' });
  let bodyBytes = 0;
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    const info: ProxyRequest = { method: req.method ?? 'GET', path: req.url ?? '/', headers: { ...req.headers } };
    requests.push(info);
    const action = handler(info);
    if (action.kind === 'status') {
      res.writeHead(action.status, { 'content-type': 'application/json', ...action.headers });
      res.end(JSON.stringify({ errors: [{ code: 'INJECTED', message: `injected ${action.status}` }] }));
      return;
    }
    if (action.kind === 'redirect') {
      res.writeHead(action.status ?? 307, { location: action.location });
      res.end();
      return;
    }
    const headers: http.OutgoingHttpHeaders = { ...req.headers, host: upstream.host, ...options.addHeaders };
    if (action.kind === 'forward') for (const h of action.dropHeaders ?? []) delete headers[h.toLowerCase()];
    const up = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        let offset = 0;
        let rechunking = false; // a 'rechunk' piece is still to be written
        let upstreamEnded = false;
        upRes.on('data', (chunk: Buffer) => {
          if (action.kind === 'truncate') {
            const keep = Math.max(0, Math.min(chunk.length, action.after - offset));
            if (keep > 0) res.write(chunk.subarray(0, keep));
            bodyBytes += keep;
            offset += chunk.length;
            if (offset >= action.after && !upRes.destroyed) {
              upRes.destroy();
              // Flush what was written, then close: the client sees a body shorter than Content-Length.
              res.socket?.end();
            }
            return;
          }
          if (action.kind === 'stall') {
            const keep = Math.max(0, Math.min(chunk.length, action.after - offset));
            if (keep > 0) res.write(chunk.subarray(0, keep));
            bodyBytes += keep;
            offset += chunk.length;
            if (offset >= action.after && !upRes.destroyed) upRes.destroy(); // and never end res
            return;
          }
          if (action.kind === 'rechunk') {
            // Pause upstream while this chunk goes out piece by piece, one per turn.
            upRes.pause();
            offset += chunk.length;
            bodyBytes += chunk.length;
            rechunking = true;
            const writeFrom = (at: number): void => {
              if (at >= chunk.length) {
                rechunking = false;
                if (upstreamEnded) res.end();
                else upRes.resume();
                return;
              }
              const end = Math.min(chunk.length, at + Math.max(1, action.pieceSize()));
              res.write(chunk.subarray(at, end));
              setImmediate(writeFrom, end);
            };
            writeFrom(0);
            return;
          }
          if (action.kind === 'corrupt' && action.at >= offset && action.at < offset + chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[action.at - offset] ^= 0xff;
          }
          offset += chunk.length;
          bodyBytes += chunk.length;
          res.write(chunk);
        });
        upRes.on('end', () => {
          upstreamEnded = true;
          if (action.kind !== 'stall' && !rechunking) res.end();
        });
        upRes.on('error', () => res.socket?.destroy());
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    requests,
    bodyBytes: () => bodyBytes,
    setHandler(h) {
      handler = h;
    },
    async stop() {
      agent.destroy();
      await closeServer(server);
    },
  };
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

// ---------------------------------------------------------------------------
// Building OCI layouts by hand

/** The demo image's layout (scripts/fixtures.sh; tag "bookworm"), or a clear error if it is missing. */
export function demoLayout(): string {
  const dir = process.env.CLIP_DEMO_OCI ?? '/var/cache/clip-native/demo-oci';
  if (!fs.existsSync(path.join(dir, 'index.json'))) {
    throw new Error(`demo OCI layout missing at ${dir}: run "bash scripts/fixtures.sh"`);
  }
  return dir;
}

/** Writes `bytes` as a blob of an OCI layout; returns its descriptor. */
export function writeBlob(layoutDir: string, bytes: Buffer | string, mediaType: string): { mediaType: string; digest: string; size: number } {
  const data = Buffer.from(bytes);
  const hex = createHash('sha256').update(data).digest('hex');
  const dir = path.join(layoutDir, 'blobs', 'sha256');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, hex), data);
  return { mediaType, digest: `sha256:${hex}`, size: data.length };
}

/** Links (or copies) an existing blob file into a layout without reading it. */
export function linkBlob(layoutDir: string, sourceFile: string, digest: string): void {
  const dir = path.join(layoutDir, 'blobs', 'sha256');
  fs.mkdirSync(dir, { recursive: true });
  const dest = path.join(dir, digest.slice('sha256:'.length));
  if (fs.existsSync(dest)) return;
  try {
    fs.linkSync(sourceFile, dest);
  } catch {
    fs.symlinkSync(path.resolve(sourceFile), dest);
  }
}

/** Writes `oci-layout` and `index.json` listing `manifests`. */
export function writeLayoutIndex(layoutDir: string, manifests: unknown[]): void {
  fs.mkdirSync(layoutDir, { recursive: true });
  fs.writeFileSync(path.join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(path.join(layoutDir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
}

type Descriptor = { mediaType: string; digest: string; size: number };

/** What buildTwoPlatformLayout needs of the demo image, as resolveImage gives it. */
export interface DemoImageParts {
  layers: Array<{ digest: string }>;
  manifestDescriptor: { digest: string };
  configDescriptor: { digest: string };
  manifest: object;
  config: object;
}

/**
 * Writes into `dir` an OCI image index, tagged "multi", that lists the demo
 * image as linux/amd64 and a copy of it as linux/arm64 (its config with
 * `armConfigFields` merged in), plus `extraManifests` written as-is; the
 * layer blobs are linked, not copied.
 */
export function buildTwoPlatformLayout(
  dir: string,
  demo: DemoImageParts,
  options: { armConfigFields?: object; extraManifests?: object[] } = {},
): { index: Descriptor; amdManifest: Descriptor; armManifest: Descriptor; armConfig: Descriptor } {
  const demoDir = demoLayout();
  const blob = (digest: string) => path.join(demoDir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const manifestType = 'application/vnd.oci.image.manifest.v1+json';
  const configType = 'application/vnd.oci.image.config.v1+json';
  const indexType = 'application/vnd.oci.image.index.v1+json';
  for (const layer of demo.layers) linkBlob(dir, blob(layer.digest), layer.digest);
  const amdManifest = writeBlob(dir, fs.readFileSync(blob(demo.manifestDescriptor.digest)), manifestType);
  writeBlob(dir, fs.readFileSync(blob(demo.configDescriptor.digest)), configType);
  const armConfig = writeBlob(dir, JSON.stringify({ ...demo.config, architecture: 'arm64', ...options.armConfigFields }), configType);
  const armManifest = writeBlob(dir, JSON.stringify({ ...demo.manifest, config: armConfig }), manifestType);
  const index = writeBlob(
    dir,
    JSON.stringify({
      schemaVersion: 2,
      mediaType: indexType,
      manifests: [
        { ...amdManifest, platform: { os: 'linux', architecture: 'amd64' } },
        { ...armManifest, platform: { os: 'linux', architecture: 'arm64' } },
        ...(options.extraManifests ?? []),
      ],
    }),
    indexType,
  );
  writeLayoutIndex(dir, [{ ...index, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }]);
  return { index, amdManifest, armManifest, armConfig };
}

/**
 * Writes a small single-layer image (a gzip'd tar of a few text files, made
 * with GNU tar) into an OCI layout under `tag`; returns its manifest digest.
 */
export function buildTinyImage(layoutDir: string, options: { tag?: string; architecture?: string; marker?: string } = {}): string {
  const root = tempDir('clip-tiny-root-');
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(path.join(root, 'etc', 'hello.txt'), `hello ${options.marker ?? 'tiny'}\n`);
  fs.writeFileSync(path.join(root, 'etc', 'numbers.txt'), Array.from({ length: 5000 }, (_, i) => `${i}`).join('\n'));
  const layer = sh(`tar -C '${root}' --sort=name --mtime=@0 --owner=0 --group=0 -cf - . | gzip -n`);
  fs.rmSync(root, { recursive: true, force: true });
  const diffId = `sha256:${createHash('sha256').update(zlib.gunzipSync(layer)).digest('hex')}`;
  const layerDesc = writeBlob(layoutDir, layer, 'application/vnd.oci.image.layer.v1.tar+gzip');
  const config = {
    architecture: options.architecture ?? 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: [diffId] },
  };
  const configDesc = writeBlob(layoutDir, JSON.stringify(config), 'application/vnd.oci.image.config.v1+json');
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers: [layerDesc] };
  const manifestDesc = writeBlob(layoutDir, JSON.stringify(manifest), manifest.mediaType);
  writeLayoutIndex(layoutDir, [{ ...manifestDesc, annotations: { 'org.opencontainers.image.ref.name': options.tag ?? 'tiny' } }]);
  return manifestDesc.digest;
}

/**
 * The demo image pushed to a fresh registry as demo:bookworm, indexed from
 * there into <work>/demo.clip, with a fault proxy in front of the registry
 * (the setup of the tests that read through a real, faulty registry).
 * The caller stops `proxy` and `registry`.
 */
export async function demoInRegistry(prefix: string): Promise<{ work: string; registry: RegistryHandle; proxy: FaultProxy; archive: string }> {
  const work = scratchDir(prefix);
  const registry = await startRegistry();
  await registry.push(`oci:${demoLayout()}:bookworm`, 'demo:bookworm');
  const archive = path.join(work, 'demo.clip');
  await indexImage(`${registry.host}/demo:bookworm`, { output: archive, insecure: true });
  const proxy = await startFaultProxy(registry.url);
  return { work, registry, proxy, archive };
}
