/**
 * The OCI image layout source: an image on disk as the OCI image spec lays it
 * out (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), as written by skopeo,
 * umoci, buildah and `docker save` (since 25). Tags are the index.json
 * entries' `org.opencontainers.image.ref.name` annotations. Whole blobs
 * stream through fs read streams; ranges are positional reads on file
 * handles kept open until close(), so random reads cost one pread each.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ClipError } from '../errors';
import { DigestVerifier, parseDigest, verifyBytes } from './digest';
import {
  checkRange,
  Descriptor,
  ImageSource,
  manifestDescriptorFor,
  MAX_MANIFEST_BYTES,
  parseDescriptor,
} from './source';

const REF_NAME = 'org.opencontainers.image.ref.name';

/** Read-stream chunk size (bytes): big enough that hashing, not syscalls, dominates. */
const STREAM_CHUNK = 1 << 20;

export class OciLayoutSource implements ImageSource {
  private readonly handles = new Map<string, Promise<fs.promises.FileHandle>>();
  private closed = false;

  private constructor(readonly dir: string) {}

  /**
   * Opens an OCI image layout directory after checking its `oci-layout`
   * marker (version 1.x) and that index.json parses.
   * Errors: ENOENT (no directory, no oci-layout, no index.json),
   * EUNSUPPORTED (layout version 2+), ECORRUPT (malformed files).
   */
  static async open(dir: string): Promise<OciLayoutSource> {
    const resolved = path.resolve(dir);
    let marker: string;
    try {
      const st = await fs.promises.stat(resolved);
      if (!st.isDirectory()) throw new ClipError('ENOENT', `OCI layout ${resolved} is not a directory`);
      marker = await fs.promises.readFile(path.join(resolved, 'oci-layout'), 'utf8');
    } catch (e) {
      if (e instanceof ClipError) throw e;
      if (isErrno(e, 'ENOENT')) {
        const what = fs.existsSync(resolved) ? `${resolved} is not an OCI image layout (no oci-layout file)` : `OCI layout directory ${resolved} does not exist`;
        throw new ClipError('ENOENT', what);
      }
      throw ioError(e, `reading ${resolved}/oci-layout`);
    }
    let version: unknown;
    try {
      version = (JSON.parse(marker) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch {
      throw new ClipError('ECORRUPT', `${resolved}/oci-layout is not valid JSON`);
    }
    if (typeof version !== 'string' || !/^1\./.test(version)) {
      throw new ClipError('EUNSUPPORTED', `${resolved}: OCI layout version ${String(version)} is not supported (want 1.x)`);
    }
    const source = new OciLayoutSource(resolved);
    await source.readIndex();
    return source;
  }

  describe(): string {
    return `OCI layout ${this.dir}`;
  }

  /**
   * Lists index.json's entries (re-read each call, so tags added since open()
   * are seen). Errors: ENOENT, ECORRUPT.
   */
  async readIndex(): Promise<Descriptor[]> {
    const file = path.join(this.dir, 'index.json');
    let text: string;
    try {
      text = await fs.promises.readFile(file, 'utf8');
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw new ClipError('ENOENT', `${this.describe()} has no index.json`);
      throw ioError(e, `reading ${file}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ClipError('ECORRUPT', `${file} is not valid JSON`);
    }
    const manifests = (json as { manifests?: unknown } | null)?.manifests;
    if (!Array.isArray(manifests)) throw new ClipError('ECORRUPT', `${file} has no manifests array`);
    return manifests.map((m, i) => parseDescriptor(m, this.describe(), `index.json manifests[${i}]`));
  }

  /** The tags index.json names, in its order. */
  async tags(): Promise<string[]> {
    return (await this.readIndex()).map((d) => d.annotations?.[REF_NAME]).filter((t): t is string => t !== undefined);
  }

  async fetchManifest(refOrDigest: string | undefined): Promise<{ descriptor: Descriptor; bytes: Buffer }> {
    this.checkOpen();
    const entries = await this.readIndex();
    let descriptor: Descriptor | undefined;
    if (refOrDigest === undefined) {
      if (entries.length !== 1) {
        const tags = entries.map((d) => d.annotations?.[REF_NAME]).filter(Boolean);
        throw new ClipError(
          entries.length === 0 ? 'ENOENT' : 'EINVAL',
          entries.length === 0
            ? `${this.describe()} holds no images`
            : `${this.describe()} holds ${entries.length} images; name one with :TAG (tags: ${tags.join(', ') || 'none'})`,
        );
      }
      descriptor = entries[0];
    } else if (refOrDigest.includes(':')) {
      parseDigest(refOrDigest);
      descriptor = entries.find((d) => d.digest === refOrDigest);
      if (!descriptor) {
        // Not listed in index.json (e.g. a platform manifest under an index): any blob will do.
        const bytes = await this.readSmallBlob(refOrDigest, MAX_MANIFEST_BYTES, 'manifest');
        const desc = manifestDescriptorFor(bytes, undefined);
        verifyBytes(bytes, { digest: refOrDigest, size: bytes.length }, `manifest ${refOrDigest} in ${this.describe()}`);
        return { descriptor: { ...desc, digest: refOrDigest }, bytes };
      }
    } else {
      descriptor = entries.find((d) => d.annotations?.[REF_NAME] === refOrDigest);
      if (!descriptor) {
        // Some tools write a whole reference ("docker.io/library/alpine:3.19") as the ref name.
        const byTag = entries.filter((d) => {
          const name = d.annotations?.[REF_NAME];
          return name !== undefined && name.endsWith(`:${refOrDigest}`);
        });
        if (byTag.length === 1) descriptor = byTag[0];
      }
      if (!descriptor) {
        const tags = entries.map((d) => d.annotations?.[REF_NAME]).filter(Boolean);
        throw new ClipError('ENOENT', `tag "${refOrDigest}" not found in ${this.describe()} (tags: ${tags.join(', ') || 'none'})`);
      }
    }
    if (descriptor.size > MAX_MANIFEST_BYTES) {
      throw new ClipError('EUNSUPPORTED', `manifest ${descriptor.digest} in ${this.describe()} is ${descriptor.size} bytes (limit ${MAX_MANIFEST_BYTES})`);
    }
    const bytes = await this.readSmallBlob(descriptor.digest, MAX_MANIFEST_BYTES, 'manifest');
    verifyBytes(bytes, descriptor, `manifest ${descriptor.digest} in ${this.describe()}`);
    return { descriptor, bytes };
  }

  async *openBlob(desc: Descriptor, options: { chunkBytes?: number } = {}): AsyncIterable<Buffer> {
    this.checkOpen();
    const file = this.blobPath(desc.digest);
    const what = `blob ${desc.digest} in ${this.describe()}`;
    const verifier = new DigestVerifier(desc, what);
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(file, 'r');
    } catch (e) {
      throw this.blobError(e, desc.digest);
    }
    try {
      // A size mismatch is known before any byte is read: fail before yielding.
      this.checkBlobSize(desc, (await handle.stat()).size);
      const stream = handle.createReadStream({ highWaterMark: options.chunkBytes ?? STREAM_CHUNK, autoClose: false, start: 0 });
      try {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          verifier.update(chunk);
          yield chunk;
        }
      } finally {
        stream.destroy();
      }
      verifier.finish();
    } catch (e) {
      if (e instanceof ClipError) throw e;
      throw ioError(e, `reading ${what}`);
    } finally {
      await handle.close();
    }
  }

  async localBlob(desc: Descriptor): Promise<string> {
    this.checkOpen();
    const file = this.blobPath(desc.digest);
    let size: number;
    try {
      size = (await fs.promises.stat(file)).size;
    } catch (e) {
      throw this.blobError(e, desc.digest);
    }
    this.checkBlobSize(desc, size);
    return file;
  }

  private checkBlobSize(desc: Descriptor, size: number): void {
    const what = `blob ${desc.digest} in ${this.describe()}`;
    if (size < desc.size) throw new ClipError('ETRUNCATED', `${what} is ${size} bytes, its descriptor says ${desc.size}`);
    if (size > desc.size) throw new ClipError('EDIGEST', `${what} is ${size} bytes, its descriptor says ${desc.size}`);
  }

  async readBlobRange(desc: Descriptor, begin: number, end: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(Math.max(0, end - begin));
    await this.readBlobRangeInto(desc, begin, end, out);
    return out;
  }

  async readBlobRangeInto(desc: Descriptor, begin: number, end: number, out: Buffer): Promise<void> {
    this.checkOpen();
    checkRange(desc, begin, end, this.describe());
    if (out.length < end - begin) throw new ClipError('EINVAL', `readBlobRangeInto: ${end - begin} bytes do not fit in ${out.length}`);
    if (end === begin) return;
    const handle = await this.handleFor(desc);
    let done = 0;
    while (done < end - begin) {
      let n: number;
      try {
        ({ bytesRead: n } = await handle.read(out, done, end - begin - done, begin + done));
      } catch (e) {
        throw ioError(e, `reading blob ${desc.digest} in ${this.describe()}`);
      }
      if (n === 0) {
        throw new ClipError('ETRUNCATED', `blob ${desc.digest} in ${this.describe()} ends at ${begin + done}, before ${end}`);
      }
      done += n;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const handles = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(handles.map(async (p) => (await p.catch(() => undefined))?.close()));
  }

  /** blobs/<alg>/<hex> under the layout. Errors: EINVAL/EUNSUPPORTED for malformed digests. */
  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return path.join(this.dir, 'blobs', algorithm, hex);
  }

  private handleFor(desc: Descriptor): Promise<fs.promises.FileHandle> {
    let handle = this.handles.get(desc.digest);
    if (!handle) {
      handle = fs.promises.open(this.blobPath(desc.digest), 'r').catch((e: unknown) => {
        this.handles.delete(desc.digest);
        throw this.blobError(e, desc.digest);
      });
      this.handles.set(desc.digest, handle);
    }
    return handle;
  }

  private async readSmallBlob(digest: string, limit: number, what: string): Promise<Buffer> {
    const file = this.blobPath(digest);
    try {
      const st = await fs.promises.stat(file);
      if (st.size > limit) throw new ClipError('EUNSUPPORTED', `${what} ${digest} in ${this.describe()} is ${st.size} bytes (limit ${limit})`);
      return await fs.promises.readFile(file);
    } catch (e) {
      throw this.blobError(e, digest);
    }
  }

  private blobError(e: unknown, digest: string): ClipError {
    if (e instanceof ClipError) return e;
    if (isErrno(e, 'ENOENT')) return new ClipError('ENOENT', `blob ${digest} not found in ${this.describe()}`);
    return ioError(e, `opening blob ${digest} in ${this.describe()}`);
  }

  private checkOpen(): void {
    if (this.closed) throw new ClipError('EINVAL', `${this.describe()} is closed`);
  }
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as NodeJS.ErrnoException).code === code;
}

function ioError(e: unknown, doing: string): ClipError {
  const err = e as NodeJS.ErrnoException;
  return new ClipError('EIO', `${doing}: ${err?.code ? `${err.code} ` : ''}${err?.message ?? String(e)}`);
}
