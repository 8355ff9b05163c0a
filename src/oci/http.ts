/**
 * The HTTP client under the registry source: node's http/https (not fetch,
 * which refuses some ports, rewrites Accept-Encoding and hides redirect
 * details), keep-alive agents owned by the client, manual redirects that
 * never carry the Authorization header to another origin, and a bounded
 * retry loop with exponential backoff and jitter for idempotent requests.
 *
 * A request is retried on 408/429/500/502/503/504 and on connection errors
 * (reset, refused, timed out, socket hang up), and when the caller's consume
 * function reports a retryable failure (a body cut short). Each retry starts
 * again from the original URL, since redirect targets (presigned blob URLs)
 * may have expired. A 401 is handed to the caller's onUnauthorized hook (at
 * most twice per request), which fetches a token or refuses with EAUTH.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { ClipError } from '../errors';
import { log } from '../log';

export interface HttpClientOptions {
  /** Tries per request, the first included. Default 5. */
  maxAttempts?: number;
  /** First backoff delay (ms), doubled each retry. Default 100. */
  retryBaseMs?: number;
  /** Largest backoff delay (ms). Default 2000. */
  retryMaxMs?: number;
  /** A Retry-After longer than this (ms) fails the request instead of waiting. Default 10000. */
  maxRetryAfterMs?: number;
  /** Socket idle time (ms) before a request or a body read fails (and is retried). Default 30000. */
  timeoutMs?: number;
  /** Redirects followed per request. Default 5. */
  maxRedirects?: number;
  /** Follow a redirect from https to plain http (only sensible for insecure registries). Default false. */
  allowHttpRedirect?: boolean;
  /** Extra CA certificates (PEM) trusted for https. */
  ca?: string | Buffer;
  userAgent?: string;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body, unread. Whoever receives the response owns it (read it or destroy it). */
  body: http.IncomingMessage;
  /** The URL that answered, after redirects. */
  url: URL;
}

export interface RequestSpec {
  method: 'GET' | 'HEAD';
  url: URL;
  headers?: Record<string, string>;
  /** For messages: "GET manifest latest of 127.0.0.1:5000/demo". */
  what: string;
  /** The Authorization header for the original origin, asked for before each try. */
  authorization?: () => Promise<string | undefined>;
  /**
   * Called on a 401 from the original origin with its WWW-Authenticate and the
   * Authorization that was sent. Resolve to try again with fresh
   * authorization(); throw (EAUTH) to give up.
   */
  onUnauthorized?: (challenge: string | undefined, sent: string | undefined) => Promise<void>;
}

/** Thrown by a consume function when the response was unusable but a new try may succeed. */
export class RetryableFailure extends Error {
  constructor(
    /** What the caller gets if no try succeeds. */
    readonly final: ClipError,
    /** Server-requested delay (ms), from Retry-After. */
    readonly retryAfterMs?: number,
  ) {
    super(final.message);
    this.name = 'RetryableFailure';
  }
}

const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
const RETRYABLE_NET_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENETDOWN',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

export class HttpClient {
  readonly options: Required<Omit<HttpClientOptions, 'ca'>> & { ca?: string | Buffer };
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;
  private closed = false;

  constructor(options: HttpClientOptions = {}) {
    this.options = {
      maxAttempts: options.maxAttempts ?? 5,
      retryBaseMs: options.retryBaseMs ?? 100,
      retryMaxMs: options.retryMaxMs ?? 2000,
      maxRetryAfterMs: options.maxRetryAfterMs ?? 10_000,
      timeoutMs: options.timeoutMs ?? 30_000,
      maxRedirects: options.maxRedirects ?? 5,
      allowHttpRedirect: options.allowHttpRedirect ?? false,
      userAgent: options.userAgent ?? 'clip-native',
      ca: options.ca,
    };
    if (this.options.maxAttempts < 1) throw new ClipError('EINVAL', 'maxAttempts must be at least 1');
    this.httpAgent = new http.Agent({ keepAlive: true });
    this.httpsAgent = new https.Agent({ keepAlive: true, ...(options.ca ? { ca: options.ca } : {}) });
  }

  /**
   * Sends `spec` (following redirects, retrying as the file comment says) and
   * hands the first non-retryable response to `consume`, whose result it
   * returns. `consume` owns the body; if it throws, the body is destroyed.
   * Errors: whatever consume throws; EIO after the last try, naming the last
   * problem; EAUTH from onUnauthorized.
   */
  async request<T>(spec: RequestSpec, consume: (res: HttpResponse) => Promise<T>): Promise<T> {
    let authRounds = 0;
    for (let attempt = 1; ; attempt++) {
      let failure: RetryableFailure;
      let res: HttpResponse | undefined;
      if (this.closed) throw new ClipError('EIO', `${spec.what}: the source was closed`);
      try {
        const authorization = await spec.authorization?.();
        res = await this.send(spec, authorization);
        if (res.status === 401 && spec.onUnauthorized && res.url.origin === spec.url.origin && authRounds < 2) {
          authRounds++;
          res.body.resume();
          await spec.onUnauthorized(headerValue(res.headers['www-authenticate']), authorization);
          attempt--; // learning how to authenticate is not a failed try
          continue;
        }
        if (RETRYABLE_STATUS.has(res.status)) {
          const detail = await errorDetail(res);
          throw new RetryableFailure(
            new ClipError('EIO', `${spec.what}: ${res.url.host} answered ${res.status}${detail}`),
            parseRetryAfter(headerValue(res.headers['retry-after'])),
          );
        }
        return await consume(res);
      } catch (e) {
        res?.body.destroy();
        if (e instanceof RetryableFailure) failure = e;
        else if (isRetryableNetworkError(e)) failure = new RetryableFailure(networkError(spec, e));
        else throw e;
      }
      if (attempt >= this.options.maxAttempts) {
        throw new ClipError(failure.final.code, `${failure.final.message} (gave up after ${attempt} tries)`);
      }
      if (failure.retryAfterMs !== undefined && failure.retryAfterMs > this.options.maxRetryAfterMs) {
        throw new ClipError(failure.final.code, `${failure.final.message}; the server asked to retry after ${Math.round(failure.retryAfterMs / 1000)} s`);
      }
      const delay = Math.max(this.backoff(attempt), failure.retryAfterMs ?? 0);
      log.debug({ what: spec.what, attempt, delayMs: delay, problem: failure.final.message }, 'retrying');
      await sleep(delay);
    }
  }

  /** Backoff before try `attempt + 1` (ms): base·2^(attempt-1), capped, with half of it random. */
  backoff(attempt: number): number {
    const full = Math.min(this.options.retryMaxMs, this.options.retryBaseMs * 2 ** (attempt - 1));
    return Math.round(full / 2 + Math.random() * (full / 2));
  }

  /** Closes idle keep-alive sockets; in-flight requests fail. */
  close(): void {
    this.closed = true;
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  /** One try: the request and its redirects. Authorization goes only to the original origin. */
  private async send(spec: RequestSpec, authorization: string | undefined): Promise<HttpResponse> {
    let url = spec.url;
    for (let redirects = 0; ; redirects++) {
      const headers: Record<string, string> = { 'user-agent': this.options.userAgent, ...spec.headers };
      if (authorization !== undefined && url.origin === spec.url.origin) headers.authorization = authorization;
      const body = await this.sendOnce(spec.method, url, headers);
      const status = body.statusCode ?? 0;
      const location = headerValue(body.headers.location);
      if (!REDIRECT_STATUS.has(status) || location === undefined) return { status, headers: body.headers, body, url };
      body.resume();
      if (redirects >= this.options.maxRedirects) {
        throw new ClipError('EIO', `${spec.what}: more than ${this.options.maxRedirects} redirects`);
      }
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new ClipError('EIO', `${spec.what}: ${url.host} redirected to an invalid URL "${location}"`);
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new ClipError('EIO', `${spec.what}: redirect to unsupported URL scheme ${next.protocol}`);
      }
      if (url.protocol === 'https:' && next.protocol === 'http:' && !this.options.allowHttpRedirect) {
        throw new ClipError('EIO', `${spec.what}: refusing a redirect from https to plain http (${next.host})`);
      }
      log.debug({ what: spec.what, from: url.host, to: next.host, status }, 'following redirect');
      url = next;
    }
  }

  private sendOnce(method: string, url: URL, headers: Record<string, string>): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const transport = url.protocol === 'https:' ? https : http;
      const agent = url.protocol === 'https:' ? this.httpsAgent : this.httpAgent;
      const req = transport.request(url, { method, headers, agent }, (res) => {
        // The timeout keeps covering the body: a stalled body fails like a stalled connect.
        resolve(res);
      });
      req.setTimeout(this.options.timeoutMs, () => {
        const err = new Error(`no data for ${this.options.timeoutMs} ms`) as NodeJS.ErrnoException;
        err.code = 'ETIMEDOUT';
        req.destroy(err);
      });
      req.on('error', reject);
      req.end();
    });
  }
}

/** True for errors worth another try: connection-level failures and cut-off bodies. */
export function isRetryableNetworkError(e: unknown): boolean {
  if (typeof e !== 'object' || e === null || e instanceof ClipError) return false;
  const err = e as NodeJS.ErrnoException;
  return (err.code !== undefined && RETRYABLE_NET_CODES.has(err.code)) || err.message === 'socket hang up' || err.message === 'aborted';
}

/** The ClipError for a network failure: ETIMEDOUT/ECONNREFUSED etc. named in the message. */
export function networkError(spec: { what: string; url: URL }, e: unknown): ClipError {
  const err = e as NodeJS.ErrnoException;
  return new ClipError('EIO', `${spec.what}: ${spec.url.host}: ${err.code ? `${err.code} ` : ''}${err.message}`);
}

/**
 * Reads a whole body, at most `limit` bytes. Errors: EUNSUPPORTED when the
 * body is larger than `limit`; the stream's error (retryable) if it is cut.
 */
export async function readBody(res: HttpResponse, limit: number, what: string): Promise<Buffer> {
  const declared = Number(headerValue(res.headers['content-length']));
  if (Number.isFinite(declared) && declared > limit) {
    res.body.destroy();
    throw new ClipError('EUNSUPPORTED', `${what}: response of ${declared} bytes is larger than the limit of ${limit}`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      res.body.destroy();
      throw new ClipError('EUNSUPPORTED', `${what}: response is larger than the limit of ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/**
 * A short description of an error response for messages: the registry's
 * `errors[0].code`/`message` (Distribution's JSON error body) when present.
 * Reads and discards the body (at most 64 KiB).
 */
export async function errorDetail(res: HttpResponse): Promise<string> {
  let body: Buffer;
  try {
    body = await readBody(res, 64 << 10, 'error body');
  } catch {
    return '';
  }
  try {
    const json = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const first = json.errors?.[0];
    if (first && (typeof first.code === 'string' || typeof first.message === 'string')) {
      return ` (${[first.code, first.message].filter((x) => typeof x === 'string' && x).join(': ')})`;
    }
  } catch {
    // Not JSON: fall through to the raw text.
  }
  const text = body.toString('utf8').trim().replace(/\s+/g, ' ').slice(0, 200);
  return text ? ` (${text})` : '';
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** Retry-After as ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
