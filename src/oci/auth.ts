/**
 * Registry authentication: where credentials come from, how a 401's
 * WWW-Authenticate challenge is answered, and the token cache.
 *
 * Credentials, first found wins: the explicit option; the environment
 * (CLIP_REGISTRY_USERNAME + CLIP_REGISTRY_PASSWORD); the Docker client's
 * config ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), entry
 * `auths[host]` (keys `host`, `https://host`, `https://host/v1/` all match;
 * Docker Hub is `https://index.docker.io/v1/`) with `auth` = base64
 * "user:password" or `username`/`password` fields. Credential helpers
 * (`credHelpers`, `credsStore`) and identity tokens are not supported: a
 * config that relies on them gets a log line saying so.
 *
 * Schemes: `Basic` sends the credentials with every request; `Bearer` gets a
 * token from the challenge's realm (GET realm?service=…&scope=…, with Basic
 * credentials if there are any, anonymous otherwise) and caches it per
 * scope until shortly before it expires. Requests go anonymous until the
 * registry asks, so credentials never reach a registry that does not want them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipError } from '../errors';
import { log } from '../log';
import { errorDetail, HttpClient, readBody } from './http';
import { DOCKER_HUB_HOST } from './reference';

export interface Credentials {
  username: string;
  password: string;
}

export interface CredentialOptions {
  /** Used as given, before the environment and the Docker config. */
  credentials?: Credentials;
  /** The environment to read CLIP_REGISTRY_*, DOCKER_CONFIG and HOME from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** One challenge of a WWW-Authenticate header; scheme lowercased, parameter names lowercased. */
export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

const TOKEN = /[!#$%&'*+.^_`|~0-9A-Za-z-]+/y;
const NO_CREDENTIALS =
  'no credentials were found in the credentials option, CLIP_REGISTRY_USERNAME/CLIP_REGISTRY_PASSWORD, or the Docker config.json auths';
const DOCKER_HUB_NAMES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/**
 * Parses a WWW-Authenticate value (RFC 7235): one or more challenges, each a
 * scheme and comma-separated `name=value` / `name="quoted value"` parameters
 * (token68 forms, which registries do not use, are read as bare schemes).
 * Malformed parts are skipped, never thrown on: the caller decides whether
 * what is left is usable.
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  let pos = 0;
  const skip = (re: RegExp) => {
    while (pos < header.length && re.test(header[pos])) pos++;
  };
  const token = (): string | undefined => {
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(header);
    if (!m) return undefined;
    pos += m[0].length;
    return m[0];
  };
  while (pos < header.length) {
    skip(/[\s,]/);
    const scheme = token();
    if (scheme === undefined) {
      pos++; // a stray character: step over it
      continue;
    }
    const challenge: AuthChallenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    for (;;) {
      const save = pos;
      skip(/[\s,]/);
      const name = token();
      skip(/\s/);
      if (name === undefined || header[pos] !== '=') {
        pos = save; // the next challenge's scheme, or the end (token68 credentials are not used by registries)
        break;
      }
      pos++; // '='
      skip(/\s/);
      let value = '';
      if (header[pos] === '"') {
        pos++;
        while (pos < header.length && header[pos] !== '"') {
          if (header[pos] === '\\' && pos + 1 < header.length) pos++;
          value += header[pos++];
        }
        pos++; // closing quote
      } else {
        value = token() ?? '';
      }
      challenge.params[name.toLowerCase()] = value;
    }
  }
  return out;
}

/**
 * Finds credentials for a registry host (host[:port]) as the file comment
 * describes. Returns undefined when there are none.
 * Errors: EINVAL when only one of CLIP_REGISTRY_USERNAME/PASSWORD is set, or
 * the Docker config exists but is not valid JSON or has a malformed `auth`.
 */
export function findCredentials(host: string, options: CredentialOptions = {}): { credentials: Credentials; from: string } | undefined {
  if (options.credentials) return { credentials: options.credentials, from: 'the credentials option' };
  const env = options.env ?? process.env;
  const user = env.CLIP_REGISTRY_USERNAME;
  const pass = env.CLIP_REGISTRY_PASSWORD;
  if (user !== undefined || pass !== undefined) {
    if (user === undefined || pass === undefined) {
      throw new ClipError('EINVAL', 'set both CLIP_REGISTRY_USERNAME and CLIP_REGISTRY_PASSWORD, or neither');
    }
    return { credentials: { username: user, password: pass }, from: 'CLIP_REGISTRY_USERNAME/CLIP_REGISTRY_PASSWORD' };
  }
  const dir = env.DOCKER_CONFIG ?? path.join(env.HOME ?? os.homedir(), '.docker');
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined; // no Docker config: anonymous
  }
  let config: DockerConfig;
  try {
    config = JSON.parse(text) as DockerConfig;
  } catch {
    throw new ClipError('EINVAL', `${file} is not valid JSON`);
  }
  const want = normalizeHost(host);
  const entry = Object.entries(config.auths ?? {}).find(([key]) => normalizeHost(configKeyHost(key)) === want)?.[1];
  if (entry) {
    if (typeof entry.auth === 'string' && entry.auth.length > 0) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw new ClipError('EINVAL', `${file}: the auth entry for ${host} is not base64 of "user:password"`);
      return { credentials: { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) }, from: file };
    }
    if (typeof entry.username === 'string' && typeof entry.password === 'string') {
      return { credentials: { username: entry.username, password: entry.password }, from: file };
    }
    if (typeof entry.identitytoken === 'string') {
      log.warn({ host, file }, 'Docker config has an identity token for this registry; identity tokens are not supported');
    }
  }
  const helper = Object.entries(config.credHelpers ?? {}).find(([key]) => normalizeHost(configKeyHost(key)) === want);
  if (helper || config.credsStore) {
    log.warn(
      { host, file, helper: helper?.[1] ?? config.credsStore },
      'Docker credential helpers are not supported; set CLIP_REGISTRY_USERNAME/CLIP_REGISTRY_PASSWORD or an auths entry',
    );
  }
  return undefined;
}

interface DockerConfig {
  auths?: Record<string, { auth?: unknown; username?: unknown; password?: unknown; identitytoken?: unknown }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** `https://host/v1/` → `host`. */
function configKeyHost(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
}

/** Lowercased; every Docker Hub name becomes one. */
function normalizeHost(host: string): string {
  const h = host.toLowerCase();
  return DOCKER_HUB_NAMES.has(h) ? DOCKER_HUB_HOST : h;
}

interface CachedToken {
  token: string;
  /** ms since the epoch after which the token is not used. */
  expiresAt: number;
  /** How many requests were sent with it; a token refused on its first use means "denied", not "expired". */
  uses: number;
}

/**
 * Authentication state for one repository on one registry. Hand its
 * authorization() and onUnauthorized() to HttpClient.request.
 */
export class RegistryAuth {
  private challenge: AuthChallenge | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  private found: { credentials: Credentials; from: string } | undefined | null = null; // null: not looked up yet

  constructor(
    private readonly host: string,
    private readonly repository: string,
    private readonly http: HttpClient,
    private readonly options: CredentialOptions = {},
  ) {}

  /** The Authorization header for the next request (undefined until the registry has asked). */
  async authorization(): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') {
      const found = this.credentials();
      return found ? basicHeader(found.credentials) : undefined;
    }
    const scope = this.scope();
    const key = `${challenge.params.realm} ${challenge.params.service ?? ''} ${scope}`;
    let cached = this.tokens.get(key);
    if (!cached || cached.expiresAt <= Date.now()) {
      this.tokens.delete(key);
      let pending = this.pending.get(key);
      if (!pending) {
        pending = this.fetchToken(challenge, scope).finally(() => this.pending.delete(key));
        this.pending.set(key, pending);
      }
      cached = await pending;
      this.tokens.set(key, cached);
    }
    cached.uses++;
    return `Bearer ${cached.token}`;
  }

  /**
   * Learns from a 401. Resolves when a new try may succeed (a challenge was
   * learnt, or a used token expired); throws EAUTH when the credentials or
   * token just sent were refused, or when no usable challenge was given.
   */
  async onUnauthorized(header: string | undefined, sent: string | undefined): Promise<void> {
    const challenges = parseWwwAuthenticate(header ?? '');
    const usable = challenges.find((c) => c.scheme === 'bearer' && c.params.realm) ?? challenges.find((c) => c.scheme === 'basic');
    if (!usable) {
      throw new ClipError('EAUTH', `authentication to ${this.host} refused (401) with no usable challenge${header ? ` ("${header}")` : ''}`);
    }
    if (sent?.startsWith('Basic ')) {
      throw new ClipError('EAUTH', `authentication to ${this.host} refused (401) for ${this.who()}`);
    }
    if (sent?.startsWith('Bearer ')) {
      const token = sent.slice('Bearer '.length);
      for (const [key, cached] of this.tokens) {
        if (cached.token !== token) continue;
        this.tokens.delete(key);
        if (cached.uses <= 1) {
          const why = [usable.params.error, usable.params.error_description].filter(Boolean).join(': ');
          throw new ClipError(
            'EAUTH',
            `authentication to ${this.host} refused (401) for ${this.scope()} with a token from ${this.challenge?.params.realm ?? 'the token server'} for ${this.who()}${why ? ` (${why})` : ''}`,
          );
        }
      }
    }
    if (usable.scheme === 'basic' && !this.credentials()) {
      throw new ClipError('EAUTH', `authentication to ${this.host} refused (401): it requires credentials and ${NO_CREDENTIALS}`);
    }
    this.challenge = usable;
  }

  /** The scope to ask tokens for: the registry's own words when it gave them, else pull on our repository. */
  private scope(): string {
    return this.challenge?.params.scope || `repository:${this.repository}:pull`;
  }

  private credentials(): { credentials: Credentials; from: string } | undefined {
    if (this.found === null) this.found = findCredentials(this.host, this.options);
    return this.found;
  }

  /** `user "x" (credentials from X)`, or `anonymous access (…none found…)`. */
  private who(): string {
    const found = this.credentials();
    if (found) return `user "${found.credentials.username}" (credentials from ${found.from})`;
    return `anonymous access (${NO_CREDENTIALS})`;
  }

  private async fetchToken(challenge: AuthChallenge, scope: string): Promise<CachedToken> {
    let url: URL;
    try {
      url = new URL(challenge.params.realm);
    } catch {
      throw new ClipError('EAUTH', `${this.host} named an invalid token realm "${challenge.params.realm}"`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new ClipError('EAUTH', `${this.host} named a token realm with unsupported scheme ${url.protocol}`);
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    for (const s of scope.split(' ').filter(Boolean)) url.searchParams.append('scope', s);
    const found = this.credentials();
    const headers: Record<string, string> = { accept: 'application/json' };
    if (found) headers.authorization = basicHeader(found.credentials);
    const realm = `${url.origin}${url.pathname}`;
    return this.http.request({ method: 'GET', url, headers, what: `token for ${scope} from ${realm}` }, async (res) => {
      if (res.status === 401 || res.status === 403) {
        const detail = await errorDetail(res);
        throw new ClipError('EAUTH', `authentication to ${this.host} refused (${res.status}) by token server ${realm} for ${this.who()}${detail}`);
      }
      if (res.status !== 200) {
        const detail = await errorDetail(res);
        throw new ClipError('EIO', `token server ${realm} answered ${res.status}${detail}`);
      }
      const body = await readBody(res, 1 << 20, `token from ${realm}`);
      let json: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
      try {
        json = JSON.parse(body.toString('utf8')) as typeof json;
      } catch {
        throw new ClipError('EAUTH', `token server ${realm} answered with invalid JSON`);
      }
      const token = typeof json.token === 'string' && json.token ? json.token : json.access_token;
      if (typeof token !== 'string' || !token) throw new ClipError('EAUTH', `token server ${realm} answered without a token`);
      // The spec's default lifetime is 60 s; renew a little early so a token never expires in flight.
      const lifetimeMs = (typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 60) * 1000;
      const issued = typeof json.issued_at === 'string' ? Date.parse(json.issued_at) : NaN;
      const base = Number.isNaN(issued) || issued > Date.now() ? Date.now() : issued;
      return { token, expiresAt: base + lifetimeMs - Math.min(30_000, lifetimeMs / 10), uses: 0 };
    });
  }
}

function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}
