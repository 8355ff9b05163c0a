/**
 * The registry source: one repository on a registry that speaks the
 * Distribution API v2 (Docker Hub, GHCR, ECR, Harbor, docker-registry).
 *
 *   manifests  GET /v2/<name>/manifests/<tag|digest>, Accept: the four types
 *              source.ts knows; verified against the digest asked for, or
 *              (by tag) against Docker-Content-Digest when the registry sends one.
 *   blobs      GET /v2/<name>/blobs/<digest>, streamed and verified; a body
 *              cut short is resumed with `Range: bytes=<got>-` from where it
 *              stopped (a 200 answer to that is skipped forward), within the
 *              retry budget, so the bytes yielded are always the blob's own.
 *   ranges     GET with `Range: bytes=a-b`; the answer must be 206 with the
 *              matching Content-Range and exactly b-a+1 bytes. A registry that
 *              ignores Range (200, whole blob) is tolerated only for blobs up
 *              to `maxFullBodyForRange` bytes (the whole blob is then verified
 *              and sliced); for bigger blobs that is EUNSUPPORTED, never a
 *              silent download of the whole layer per read.
 *
 * Errors: 404 → ENOENT ("unknown image"), 401/403 → EAUTH, everything else
 * after bounded retries → EIO naming the request and the last answer.
 */
import { ClipError } from '../errors';
import { log } from '../log';
import { CredentialOptions, RegistryAuth } from './auth';
import { DigestVerifier, looksLikeDigest, parseDigest, verifyBytes } from './digest';
import {
  errorDetail,
  headerValue,
  HttpClient,
  HttpClientOptions,
  HttpResponse,
  isRetryableNetworkError,
  networkError,
  readBody,
  RequestSpec,
  RetryableFailure,
  sleep,
} from './http';
import {
  checkRange,
  Descriptor,
  ImageSource,
  MANIFEST_MEDIA_TYPES,
  manifestDescriptorFor,
  MAX_MANIFEST_BYTES,
} from './source';

export interface RegistrySourceOptions extends HttpClientOptions, CredentialOptions {
  /** host[:port] of the registry API (a parsed reference's `host`). */
  host: string;
  /** Repository path, e.g. `library/alpine`. */
  repository: string;
  /** Plain http instead of https (local registries). Default false. */
  insecure?: boolean;
  /** Largest blob (bytes) read whole when the registry ignores a Range header. Default 1 MiB. */
  maxFullBodyForRange?: number;
}

export class RegistrySource implements ImageSource {
  readonly host: string;
  readonly repository: string;
  private readonly http: HttpClient;
  private readonly auth: RegistryAuth;
  private readonly base: string;
  private readonly maxFullBodyForRange: number;

  /** Nothing is sent until the first fetch. Errors: EINVAL for an empty host or repository. */
  constructor(options: RegistrySourceOptions) {
    if (!options.host || !options.repository) throw new ClipError('EINVAL', 'a registry source needs a host and a repository');
    this.host = options.host;
    this.repository = options.repository;
    this.http = new HttpClient({ ...options, allowHttpRedirect: options.allowHttpRedirect ?? options.insecure ?? false });
    this.auth = new RegistryAuth(this.host, this.repository, this.http, options);
    this.base = `${options.insecure ? 'http' : 'https'}://${this.host}/v2/${this.repository}`;
    this.maxFullBodyForRange = options.maxFullBodyForRange ?? 1 << 20;
  }

  describe(): string {
    return `registry ${this.host}/${this.repository}`;
  }

  async fetchManifest(refOrDigest: string | undefined): Promise<{ descriptor: Descriptor; bytes: Buffer }> {
    const ref = refOrDigest ?? 'latest';
    const byDigest = looksLikeDigest(ref);
    if (byDigest) parseDigest(ref);
    const what = `manifest ${ref} of ${this.host}/${this.repository}`;
    const spec = this.spec(`${this.base}/manifests/${ref}`, what, { accept: MANIFEST_MEDIA_TYPES.join(', ') });
    return this.http.request(spec, async (res) => {
      if (res.status !== 200) throw await this.statusError(res, what);
      const bytes = await readBody(res, MAX_MANIFEST_BYTES, what);
      const contentType = headerValue(res.headers['content-type'])?.split(';')[0].trim();
      const descriptor = manifestDescriptorFor(bytes, contentType);
      if (byDigest) {
        verifyBytes(bytes, { digest: ref, size: bytes.length }, what);
        descriptor.digest = ref;
      } else {
        // The registry's own digest for the tag, when given, must be what we got.
        const stated = headerValue(res.headers['docker-content-digest']);
        if (stated && stated.startsWith('sha256:') && stated !== descriptor.digest) {
          throw new ClipError('EDIGEST', `${what}: the registry says ${stated}, the bytes hash to ${descriptor.digest}`);
        }
      }
      return { descriptor, bytes };
    });
  }

  async *openBlob(desc: Descriptor): AsyncIterable<Buffer> {
    parseDigest(desc.digest);
    const what = `blob ${desc.digest} of ${this.host}/${this.repository}`;
    const verifier = new DigestVerifier(desc, what);
    const maxAttempts = this.http.options.maxAttempts;
    let failures = 0;
    let lastProblem = '';
    for (;;) {
      const offset = verifier.received;
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      // request() retries until the headers of a usable answer arrive; failures
      // after that (a body cut short) are counted here.
      const res = await this.http.request(this.spec(`${this.base}/blobs/${desc.digest}`, what, headers), async (r) => r);
      let skip = 0;
      try {
        if (offset > 0 && res.status === 206) {
          const range = parseContentRange(headerValue(res.headers['content-range']));
          if (!range || range.start !== offset || (range.total !== undefined && range.total !== desc.size)) {
            throw new ClipError('EIO', `${what}: resuming at ${offset}, the registry answered Content-Range "${headerValue(res.headers['content-range'])}"`);
          }
        } else if (res.status === 200) {
          skip = offset; // a resume answered with the whole blob: skip what we have
        } else {
          throw await this.statusError(res, what);
        }
        const length = Number(headerValue(res.headers['content-length']));
        if (Number.isFinite(length) && length !== desc.size - offset + skip) {
          throw new ClipError('EDIGEST', `${what}: the registry sends ${length} bytes from offset ${offset - skip}, the descriptor says ${desc.size} in all`);
        }
      } catch (e) {
        res.body.destroy();
        throw e;
      }
      const body = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      try {
        for (;;) {
          let step: IteratorResult<Buffer>;
          try {
            step = await body.next();
          } catch (e) {
            if (e instanceof ClipError) throw e;
            if (!isRetryableNetworkError(e)) throw networkError({ what, url: res.url }, e);
            const err = e as NodeJS.ErrnoException;
            lastProblem = `${what}: the body was cut short after ${verifier.received} of ${desc.size} bytes (${err.code ? `${err.code} ` : ''}${err.message})`;
            break;
          }
          if (step.done) {
            if (verifier.received < desc.size) lastProblem = `${what}: the body ended after ${verifier.received} of ${desc.size} bytes`;
            break;
          }
          let chunk = step.value;
          if (skip > 0) {
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
            if (chunk.length === 0) continue;
          }
          verifier.update(chunk); // throws EDIGEST before yielding bytes beyond the size
          yield chunk;
        }
      } finally {
        res.body.destroy();
      }
      if (verifier.received >= desc.size) break;
      failures++;
      if (failures >= maxAttempts) {
        throw new ClipError('ETRUNCATED', `${lastProblem} (gave up after ${failures} tries)`);
      }
      log.debug({ what, offset: verifier.received, failures, problem: lastProblem }, 'blob body cut short; resuming');
      await sleep(this.http.backoff(failures));
    }
    verifier.finish();
  }

  async readBlobRange(desc: Descriptor, begin: number, end: number): Promise<Buffer> {
    checkRange(desc, begin, end, this.describe());
    if (begin === end) return Buffer.alloc(0);
    const what = `bytes ${begin}-${end - 1} of blob ${desc.digest} of ${this.host}/${this.repository}`;
    const spec = this.spec(`${this.base}/blobs/${desc.digest}`, what, { range: `bytes=${begin}-${end - 1}` });
    return this.http.request(spec, async (res) => {
      if (res.status === 206) {
        const contentRange = headerValue(res.headers['content-range']);
        const range = parseContentRange(contentRange);
        if (!range || range.start !== begin || range.end !== end - 1 || (range.total !== undefined && range.total !== desc.size)) {
          throw new ClipError('EIO', `${what}: the registry answered Content-Range "${contentRange}"`);
        }
        const bytes = await readBodyOrRetry(res, end - begin, what);
        if (bytes.length !== end - begin) {
          throw new RetryableFailure(new ClipError('ETRUNCATED', `${what}: got ${bytes.length} of ${end - begin} bytes`));
        }
        return bytes;
      }
      if (res.status === 200) {
        if (desc.size > this.maxFullBodyForRange) {
          throw new ClipError(
            'EUNSUPPORTED',
            `${what}: ${res.url.host} ignored the Range header and sent the whole ${desc.size}-byte blob; range reads need a registry that supports Range`,
          );
        }
        const whole = await readBodyOrRetry(res, desc.size, what);
        if (whole.length < desc.size) {
          throw new RetryableFailure(new ClipError('ETRUNCATED', `${what}: got ${whole.length} of ${desc.size} bytes`));
        }
        verifyBytes(whole, desc, `blob ${desc.digest} of ${this.host}/${this.repository}`);
        return whole.subarray(begin, end);
      }
      if (res.status === 416) {
        const detail = await errorDetail(res);
        throw new ClipError('ECORRUPT', `${what}: the registry says the range is not satisfiable (416)${detail}; is the descriptor's size ${desc.size} right?`);
      }
      throw await this.statusError(res, what);
    });
  }

  async close(): Promise<void> {
    this.http.close();
  }

  private spec(url: string, what: string, headers: Record<string, string>): RequestSpec {
    return {
      method: 'GET',
      url: new URL(url),
      what: `GET ${what}`,
      // Blobs are stored compressed already; identity keeps Range offsets meaningful.
      headers: { 'accept-encoding': 'identity', ...headers },
      authorization: () => this.auth.authorization(),
      onUnauthorized: (challenge, sent) => this.auth.onUnauthorized(challenge, sent),
    };
  }

  /** The error for an unexpected status (after retries and auth rounds). */
  private async statusError(res: HttpResponse, what: string): Promise<ClipError> {
    const detail = await errorDetail(res);
    if (res.status === 404) return new ClipError('ENOENT', `unknown image: ${what} not found (404)${detail}`);
    if (res.status === 401 || res.status === 403) {
      return new ClipError('EAUTH', `authentication to ${res.url.host} refused (${res.status}) for ${what}${detail}`);
    }
    return new ClipError('EIO', `GET ${what}: ${res.url.host} answered ${res.status}${detail}`);
  }
}

/** readBody, with a body cut off by the network reported as a retryable truncation. */
async function readBodyOrRetry(res: HttpResponse, limit: number, what: string): Promise<Buffer> {
  try {
    return await readBody(res, limit, what);
  } catch (e) {
    if (!isRetryableNetworkError(e)) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new RetryableFailure(new ClipError('ETRUNCATED', `${what}: the body was cut short (${err.code ? `${err.code} ` : ''}${err.message})`));
  }
}

/** `bytes a-b/total` (total may be `*`). */
function parseContentRange(value: string | undefined): { start: number; end: number; total?: number } | undefined {
  const m = value ? /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value) : null;
  if (!m) return undefined;
  const out: { start: number; end: number; total?: number } = { start: Number(m[1]), end: Number(m[2]) };
  if (m[3] !== '*') out.total = Number(m[3]);
  return out;
}
