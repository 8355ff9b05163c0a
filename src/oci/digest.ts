/**
 * Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`): parsing, hashing
 * whole buffers, and a streaming verifier that every blob read goes through.
 * A blob is trusted only once its size and digest match its descriptor; the
 * verifier is what turns "the bytes ended" into "the bytes are right", and it
 * fails loudly (EDIGEST, ETRUNCATED) rather than letting a caller proceed.
 */
import { createHash, Hash } from 'node:crypto';
import { ClipError } from '../errors';

export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** A digest split into its parts. */
export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  hex: string;
}

/** True when `text` looks like `algorithm:hex` (any algorithm, well-formed or not supported). */
export function looksLikeDigest(text: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(text);
}

/**
 * Parses `sha256:<hex>` or `sha512:<hex>` (lowercase hex of the right length).
 * Errors: EUNSUPPORTED for a well-formed digest with another algorithm,
 * EINVAL for anything else.
 */
export function parseDigest(text: string): ParsedDigest {
  const colon = text.indexOf(':');
  const algorithm = text.slice(0, colon);
  const hex = text.slice(colon + 1);
  if (colon > 0 && (algorithm === 'sha256' || algorithm === 'sha512')) {
    if (hex.length === HEX_LENGTH[algorithm] && /^[0-9a-f]+$/.test(hex)) return { algorithm, hex };
    throw new ClipError('EINVAL', `"${text}" is not a valid ${algorithm} digest (want ${HEX_LENGTH[algorithm]} lowercase hex digits)`);
  }
  if (looksLikeDigest(text)) {
    throw new ClipError('EUNSUPPORTED', `digest algorithm "${algorithm}" is not supported (only sha256 and sha512)`);
  }
  throw new ClipError('EINVAL', `"${text}" is not a digest (want sha256:<64 hex digits>)`);
}

/** The digest of `bytes` with the given algorithm, as `algorithm:hex`. */
export function digestOf(bytes: Buffer, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/**
 * Checks a whole buffer against an expected size and digest.
 * Errors: ETRUNCATED when shorter than `size`, EDIGEST when longer or when the
 * digest differs. `what` names the object in the message ("manifest of …").
 */
export function verifyBytes(bytes: Buffer, expected: { digest: string; size: number }, what: string): void {
  const verifier = new DigestVerifier(expected, what);
  verifier.update(bytes);
  verifier.finish();
}

/**
 * Hashes a blob as it streams past and checks it at the end. Feed chunks in
 * order with update() (it throws EDIGEST as soon as more bytes arrive than the
 * descriptor's size, before a caller could use them), then call finish().
 */
export class DigestVerifier {
  private readonly hash: Hash;
  private readonly expectedHex: string;
  private readonly algorithm: DigestAlgorithm;
  /** Bytes seen so far. */
  received = 0;

  constructor(
    private readonly expected: { digest: string; size: number },
    private readonly what: string,
  ) {
    const parsed = parseDigest(expected.digest);
    this.algorithm = parsed.algorithm;
    this.expectedHex = parsed.hex;
    this.hash = createHash(parsed.algorithm);
  }

  update(chunk: Buffer): void {
    if (this.received + chunk.length > this.expected.size) {
      throw new ClipError(
        'EDIGEST',
        `${this.what} is longer than its descriptor's ${this.expected.size} bytes (got at least ${this.received + chunk.length})`,
      );
    }
    this.hash.update(chunk);
    this.received += chunk.length;
  }

  /** Throws ETRUNCATED if bytes are missing, EDIGEST if the digest differs. */
  finish(): void {
    if (this.received < this.expected.size) {
      throw new ClipError('ETRUNCATED', `${this.what} ended after ${this.received} of ${this.expected.size} bytes`);
    }
    const hex = this.hash.digest('hex');
    if (hex !== this.expectedHex) {
      throw new ClipError('EDIGEST', `${this.what} does not match its digest: expected ${this.expected.digest}, got ${this.algorithm}:${hex}`);
    }
  }
}
