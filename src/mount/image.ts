/**
 * The archive for an image reference, kept in the host cache directory so
 * that `clip-native mount REF` indexes an image once per host:
 *
 *   <cacheDir>/archives/sha256/<manifest digest hex>.clip
 *
 * named by the digest of the platform's image manifest (not the tag, which
 * moves): a tag that still names the same manifest reuses the archive after
 * one manifest request; a new push is indexed again. An archive is written
 * under a temporary name and renamed to its digest only once complete, so a
 * file under a digest name is always a whole archive (and is checked by
 * opening it before reuse).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ClipArchive } from '../archive/reader';
import { ClipError } from '../errors';
import { indexImage } from '../index/build';
import { log } from '../log';
import { hostPlatform, openImageSource, parseImageReference, parsePlatform, referenceTarget, resolveImage } from '../oci';
import type { Credentials, Platform } from '../oci';
import { CheckpointTable } from '../storage/checkpoints';
import { defaultCacheDir } from '../storage/disk-cache';

export interface ImageArchiveOptions {
  /** Cache directory (default as the storage tiers: $CLIP_CACHE_DIR, ...). */
  cacheDir?: string;
  /** `os/arch[/variant]` (default this host's). */
  platform?: string;
  insecure?: boolean;
  credentials?: Credentials;
}

export interface ImageArchive {
  /** Absolute path of the archive. */
  path: string;
  /** The platform manifest's digest. */
  manifestDigest: string;
  /** True when the archive was already in the cache. */
  reused: boolean;
}

/**
 * The archive of image `refText` (`oci:DIR[:TAG]`, `docker://...` or a
 * registry name) for one platform: the cached one for its manifest digest,
 * or a new index of it.
 * Errors: EINVAL (bad reference or platform), EIO (the cache directory),
 * and indexImage's (ENOENT, EAUTH, EDIGEST, ECORRUPT, EUNSUPPORTED, EIO).
 */
export async function archiveForImage(refText: string, options: ImageArchiveOptions = {}): Promise<ImageArchive> {
  const ref = parseImageReference(refText);
  const platform: Platform = options.platform ? parsePlatform(options.platform) : hostPlatform();
  const dir = path.join(defaultCacheDir(options.cacheDir), 'archives', 'sha256');
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new ClipError('EIO', `cannot create ${dir}: ${(e as Error).message}`);
  }

  const source = await openImageSource(ref, { insecure: options.insecure, credentials: options.credentials });
  let manifestDigest: string;
  try {
    manifestDigest = (await resolveImage(source, referenceTarget(ref), platform)).manifestDescriptor.digest;
  } finally {
    await source.close();
  }
  const cached = archivePath(dir, manifestDigest);
  if (cached && isWholeArchive(cached)) return { path: cached, manifestDigest, reused: true };

  // Index under a temporary name, then name it by the manifest the index
  // actually read (the tag may have moved since the lookup above).
  const temp = path.join(dir, `.index-${process.pid}-${randomBytes(4).toString('hex')}.clip`);
  try {
    const result = await indexImage(refText, {
      output: temp,
      platform,
      insecure: options.insecure,
      credentials: options.credentials,
    });
    manifestDigest = result.image.manifestDescriptor.digest;
    const final = archivePath(dir, manifestDigest);
    if (!final) throw new ClipError('EUNSUPPORTED', `manifest digest ${manifestDigest} is not sha256; cannot name its archive`);
    fs.renameSync(temp, final);
    log.info({ reference: refText, manifest: manifestDigest, archive: final }, 'image indexed into the cache');
    return { path: final, manifestDigest, reused: false };
  } finally {
    fs.rmSync(temp, { force: true });
  }
}

function archivePath(dir: string, digest: string): string | null {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  return m ? path.join(dir, `${m[1]}.clip`) : null;
}

/**
 * Whether `file` opens as a valid archive whose checkpoint indexes this build
 * reads. A damaged one, or one indexed by a build with another checkpoint
 * format (its cold reads would all fail), is replaced by a new index.
 */
function isWholeArchive(file: string): boolean {
  if (!fs.existsSync(file)) return false;
  let archive: ClipArchive | null = null;
  try {
    archive = ClipArchive.open(file);
    const a = archive;
    a.layers().forEach((l, i) => {
      if (l.format === 'gzip') new CheckpointTable(a.checkpoints(i), `layer ${i}`);
    });
    return true;
  } catch (e) {
    log.warn({ archive: file, err: (e as Error).message }, 'cached archive is damaged or from another format version; indexing again');
    return false;
  } finally {
    archive?.close();
  }
}
