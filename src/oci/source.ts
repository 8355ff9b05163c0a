/**
 * Image sources and image resolution. An ImageSource is anywhere an image's
 * manifests and blobs can be read from (an OCI layout directory, a registry);
 * every source verifies what it hands out against its digest. On top of that,
 * resolveImage() walks tag → (image index →) manifest → config → layers for
 * one platform, checks every media type against what clip-native can index,
 * and returns the parsed pieces the indexer needs.
 *
 * Supported: OCI image manifest and index, Docker schema 2 manifest and
 * manifest list; layers that are plain tar or gzip'd tar. Refused with
 * EUNSUPPORTED: Docker schema 1, zstd layers, foreign/non-distributable
 * layers, and artifacts whose config is not an image config.
 */
import { ClipError } from '../errors';
import { log } from '../log';
import { digestOf, parseDigest } from './digest';
import { formatPlatform, normalizePlatform, Platform, platformMatches } from './platform';

/** A content descriptor, as in OCI manifests and indexes. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  /** Bytes. */
  size: number;
  platform?: Platform & { 'os.version'?: string; 'os.features'?: string[] };
  annotations?: Record<string, string>;
  urls?: string[];
}

/** Anywhere an image's manifests and blobs can be read from. */
export interface ImageSource {
  /** Where this source reads from, for logs and error messages (`registry 127.0.0.1:5000/demo`). */
  describe(): string;
  /**
   * Fetches a manifest or index by tag or digest (undefined: the source's
   * default, `latest` for registries, the only manifest for layouts).
   * Fetched by digest, the bytes are verified against it; fetched by tag, the
   * returned descriptor carries the digest computed from the bytes (and, where
   * the source states a digest for the tag, the two must agree).
   * Errors: ENOENT (no such tag/manifest), EDIGEST, EAUTH, EIO.
   */
  fetchManifest(refOrDigest: string | undefined): Promise<{ descriptor: Descriptor; bytes: Buffer }>;
  /**
   * Streams a whole blob. Size and digest are checked as it streams: more
   * bytes than `desc.size` throw EDIGEST before being yielded, and at the end a
   * digest mismatch throws EDIGEST and a short blob ETRUNCATED. The bytes are
   * trustworthy only once iteration ends without an error.
   * `options.chunkBytes` caps the size of the chunks yielded where the
   * source chooses it (a file is read in pieces of that size; a network
   * source yields what arrives, smaller anyway).
   */
  openBlob(desc: Descriptor, options?: { chunkBytes?: number }): AsyncIterable<Buffer>;
  /**
   * Reads bytes [begin, end) of a blob, exactly `end - begin` of them.
   * Errors: EINVAL (range outside 0..desc.size), ETRUNCATED, ENOENT, EIO.
   * A range cannot be checked against the blob's digest; callers verify
   * what they derive from it. The Buffer is the caller's own: the source
   * keeps no reference to it (the source tier frees it early).
   */
  readBlobRange(desc: Descriptor, begin: number, end: number): Promise<Buffer>;
  /**
   * Sources that can: readBlobRange into `target` (exactly `end - begin`
   * bytes from its start), with no Buffer of their own. Same errors.
   */
  readBlobRangeInto?(desc: Descriptor, begin: number, end: number, target: Buffer): Promise<void>;
  /**
   * Sources whose blobs are local files (an OCI layout): the blob's path,
   * once its size is checked like openBlob's (ETRUNCATED, EDIGEST; ENOENT).
   * Its digest is not checked here: a caller reading the file itself must
   * (the disk cache's fill does, natively, so the bytes never pass through
   * JavaScript).
   */
  localBlob?(desc: Descriptor): Promise<string>;
  /** Releases files, sockets and timers. The source is unusable afterwards. */
  close(): Promise<void>;
}

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifestV1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerManifestV1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerTar: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerForeign: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/** The four manifest types a source may return, in Accept-header order. */
export const MANIFEST_MEDIA_TYPES = [
  MediaTypes.ociIndex,
  MediaTypes.ociManifest,
  MediaTypes.dockerManifestList,
  MediaTypes.dockerManifest,
];

/** Largest manifest or index we read (bytes): real ones are a few KiB. */
export const MAX_MANIFEST_BYTES = 4 << 20;
/** Largest image config we read (bytes). */
export const MAX_CONFIG_BYTES = 16 << 20;

export type LayerCompression = 'gzip' | 'none';

/** A layer descriptor with the compression its media type implies. */
export interface LayerDescriptor extends Descriptor {
  compression: LayerCompression;
}

/** An image manifest (OCI or Docker schema 2), as parsed. */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** An image index (OCI) or manifest list (Docker), as parsed. */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

/** The parts of an image config clip-native looks at; the rest is kept as parsed. */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  config?: Record<string, unknown>;
  rootfs: { type: string; diff_ids: string[] };
  history?: unknown[];
  [key: string]: unknown;
}

/** One image, for one platform, resolved down to its layers. */
export interface ResolvedImage {
  /** The source's describe(). */
  source: string;
  /** The image index (or manifest list) that led to the manifest, if there was one. */
  indexDescriptor?: Descriptor;
  manifestDescriptor: Descriptor;
  manifest: ImageManifest;
  configDescriptor: Descriptor;
  config: ImageConfig;
  /** Bottom layer first. */
  layers: LayerDescriptor[];
  /** The config's rootfs.diff_ids, one per layer: the digests of the uncompressed tars. */
  diffIds: string[];
  /** The platform the config declares. */
  platform: Platform;
}

const LAYER_TYPES: Record<string, LayerCompression> = {
  [MediaTypes.ociLayerTar]: 'none',
  [MediaTypes.ociLayerGzip]: 'gzip',
  [MediaTypes.dockerLayerGzip]: 'gzip',
  [MediaTypes.dockerLayerTar]: 'none',
};

/** Media types recognised but refused, with the reason the error gives. */
const REFUSED_LAYER_TYPES: Array<[RegExp, string]> = [
  [/\+zstd$/, 'zstd-compressed layers are not supported yet'],
  [/nondistributable|foreign/, 'foreign (non-distributable) layers are not supported'],
];

const MAX_INDEX_DEPTH = 4;

/**
 * Resolves `ref` (a tag or digest; undefined for the source's default) to one
 * image for `platform`: follows an image index or manifest list to the
 * matching manifest, then fetches and verifies the config.
 * Errors: ENOENT (no such tag, or no manifest for the platform: the message
 * lists the platforms the index offers), EUNSUPPORTED (schema 1, zstd or
 * foreign layers, non-image artifacts), ECORRUPT (malformed JSON, layer count
 * differs from the config's diff_ids), EDIGEST, EAUTH, EIO.
 */
export async function resolveImage(source: ImageSource, ref: string | undefined, platform: Platform): Promise<ResolvedImage> {
  const want = normalizePlatform(platform);
  const where = `${source.describe()}${ref !== undefined ? ` (${ref})` : ''}`;
  let fetched = await source.fetchManifest(ref);
  let indexDescriptor: Descriptor | undefined;
  for (let depth = 0; ; depth++) {
    const parsed = parseManifestOrIndex(fetched.bytes, fetched.descriptor, where);
    if (parsed.kind === 'manifest') {
      return finishResolve(source, where, fetched.descriptor, parsed.manifest, indexDescriptor, want);
    }
    if (depth >= MAX_INDEX_DEPTH) {
      throw new ClipError('EUNSUPPORTED', `${where}: image indexes nested more than ${MAX_INDEX_DEPTH} deep`);
    }
    indexDescriptor ??= fetched.descriptor;
    const chosen = choosePlatformManifest(parsed.index, want, where);
    fetched = await source.fetchManifest(chosen.digest);
    if (fetched.descriptor.size !== chosen.size) {
      throw new ClipError('EDIGEST', `${where}: manifest ${chosen.digest} is ${fetched.descriptor.size} bytes, its index says ${chosen.size}`);
    }
    // The index's descriptor (with its platform) is the better record of this manifest.
    fetched = { bytes: fetched.bytes, descriptor: { ...chosen, mediaType: chosen.mediaType || fetched.descriptor.mediaType } };
  }
}

/** Picks the index entry for `want`; see platformMatches for the rule. */
function choosePlatformManifest(index: ImageIndex, want: Platform, where: string): Descriptor {
  const candidates = index.manifests.filter((d) => !isAttestation(d));
  const match = candidates.find((d) => d.platform !== undefined && platformMatches(want, d.platform));
  if (match) return match;
  // An index entry without a platform (some tools wrap one manifest that way) is used only when it is alone.
  if (candidates.length === 1 && candidates[0].platform === undefined) return candidates[0];
  const available = [...new Set(candidates.map((d) => (d.platform ? formatPlatform(normalizePlatform(d.platform)) : 'unknown')))];
  throw new ClipError(
    'ENOENT',
    `no manifest for ${formatPlatform(want)} in ${where}; available: ${available.length ? available.join(', ') : 'none'}`,
  );
}

/** BuildKit's provenance/SBOM entries are listed in indexes as unknown/unknown; they are not images. */
function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest';
}

async function finishResolve(
  source: ImageSource,
  where: string,
  manifestDescriptor: Descriptor,
  manifest: ImageManifest,
  indexDescriptor: Descriptor | undefined,
  want: Platform,
): Promise<ResolvedImage> {
  const configDescriptor = manifest.config;
  if (configDescriptor.mediaType !== MediaTypes.ociConfig && configDescriptor.mediaType !== MediaTypes.dockerConfig) {
    throw new ClipError('EUNSUPPORTED', `${where} is not a container image: its config media type is ${configDescriptor.mediaType}`);
  }
  const layers = manifest.layers.map((d) => layerDescriptor(d, where));
  if (configDescriptor.size > MAX_CONFIG_BYTES) {
    throw new ClipError('EUNSUPPORTED', `${where}: image config is ${configDescriptor.size} bytes (limit ${MAX_CONFIG_BYTES})`);
  }
  const configBytes = await readWholeBlob(source, configDescriptor);
  const config = parseConfig(configBytes, where);
  if (config.rootfs.diff_ids.length !== layers.length) {
    throw new ClipError(
      'ECORRUPT',
      `${where}: the manifest lists ${layers.length} layers but the config has ${config.rootfs.diff_ids.length} diff_ids`,
    );
  }
  const platform: Platform = { os: config.os, architecture: config.architecture };
  if (config.variant) platform.variant = config.variant;
  if (!indexDescriptor && !platformMatches(want, platform)) {
    // A single-platform image is used as it is (as docker does), but say so.
    log.warn({ image: where, want: formatPlatform(want), have: formatPlatform(platform) }, 'image platform differs from the requested one');
  }
  const resolved: ResolvedImage = {
    source: source.describe(),
    manifestDescriptor,
    manifest,
    configDescriptor,
    config,
    layers,
    diffIds: config.rootfs.diff_ids,
    platform: normalizePlatform(platform),
  };
  if (indexDescriptor) resolved.indexDescriptor = indexDescriptor;
  return resolved;
}

/** Checks a layer's media type; see the file comment for what is accepted. */
function layerDescriptor(d: Descriptor, where: string): LayerDescriptor {
  const compression = LAYER_TYPES[d.mediaType];
  if (compression !== undefined && !(d.urls && d.urls.length)) return { ...d, compression };
  for (const [pattern, reason] of REFUSED_LAYER_TYPES) {
    if (pattern.test(d.mediaType)) throw new ClipError('EUNSUPPORTED', `${where}: layer ${d.digest} has media type ${d.mediaType}: ${reason}`);
  }
  if (d.urls && d.urls.length) {
    throw new ClipError('EUNSUPPORTED', `${where}: layer ${d.digest} (${d.mediaType}) lives at external URLs, which are not supported`);
  }
  throw new ClipError('EUNSUPPORTED', `${where}: layer ${d.digest} has media type ${d.mediaType}, which is not a tar or gzip'd tar layer`);
}

/** Reads a small blob whole (verified by the source's openBlob). */
export async function readWholeBlob(source: ImageSource, desc: Descriptor): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source.openBlob(desc)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

type ParsedManifest = { kind: 'manifest'; manifest: ImageManifest } | { kind: 'index'; index: ImageIndex };

/**
 * Parses manifest or index bytes. The media type comes from the JSON's own
 * `mediaType` when present, else from the descriptor (Content-Type or the
 * layout's index.json), else from the shape (`manifests` → index).
 * Errors: ECORRUPT (not JSON, missing fields), EUNSUPPORTED (schema 1, other types).
 */
export function parseManifestOrIndex(bytes: Buffer, desc: Descriptor, where: string): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ClipError('ECORRUPT', `${where}: manifest ${desc.digest} is not valid JSON`);
  }
  if (!isObject(json)) throw new ClipError('ECORRUPT', `${where}: manifest ${desc.digest} is not a JSON object`);
  const declared = typeof json.mediaType === 'string' ? json.mediaType : undefined;
  if (json.schemaVersion === 1 || isSchema1(declared) || isSchema1(desc.mediaType)) {
    throw new ClipError('EUNSUPPORTED', `${where}: Docker image manifest schema 1 is not supported (re-push the image with a current client)`);
  }
  if (json.schemaVersion !== 2) {
    throw new ClipError('ECORRUPT', `${where}: manifest ${desc.digest} has schemaVersion ${String(json.schemaVersion)}, expected 2`);
  }
  const descType = MANIFEST_MEDIA_TYPES.includes(desc.mediaType as (typeof MANIFEST_MEDIA_TYPES)[number]) ? desc.mediaType : undefined;
  const mediaType = declared ?? descType ?? (Array.isArray(json.manifests) ? MediaTypes.ociIndex : MediaTypes.ociManifest);
  const annotations = stringMap(json.annotations, where, 'annotations');
  if (mediaType === MediaTypes.ociIndex || mediaType === MediaTypes.dockerManifestList) {
    if (!Array.isArray(json.manifests)) throw new ClipError('ECORRUPT', `${where}: image index ${desc.digest} has no manifests array`);
    const index: ImageIndex = {
      schemaVersion: 2,
      mediaType,
      manifests: json.manifests.map((m, i) => parseDescriptor(m, where, `manifests[${i}]`)),
    };
    if (annotations) index.annotations = annotations;
    return { kind: 'index', index };
  }
  if (mediaType === MediaTypes.ociManifest || mediaType === MediaTypes.dockerManifest) {
    if (!Array.isArray(json.layers)) throw new ClipError('ECORRUPT', `${where}: manifest ${desc.digest} has no layers array`);
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType,
      config: parseDescriptor(json.config, where, 'config'),
      layers: json.layers.map((l, i) => parseDescriptor(l, where, `layers[${i}]`)),
    };
    if (annotations) manifest.annotations = annotations;
    return { kind: 'manifest', manifest };
  }
  throw new ClipError('EUNSUPPORTED', `${where}: manifest media type ${mediaType} is not supported`);
}

function isSchema1(mediaType: string | undefined): boolean {
  return mediaType === MediaTypes.dockerManifestV1 || mediaType === MediaTypes.dockerManifestV1Signed;
}

/** Validates one descriptor object. Errors: ECORRUPT naming the field. */
export function parseDescriptor(value: unknown, where: string, field: string): Descriptor {
  if (!isObject(value)) throw new ClipError('ECORRUPT', `${where}: ${field} is not a descriptor object`);
  const { mediaType, digest, size } = value;
  if (typeof mediaType !== 'string' || mediaType.length === 0) {
    throw new ClipError('ECORRUPT', `${where}: ${field} has no mediaType`);
  }
  if (typeof digest !== 'string') throw new ClipError('ECORRUPT', `${where}: ${field} has no digest`);
  try {
    parseDigest(digest);
  } catch (e) {
    if (e instanceof ClipError && e.code === 'EUNSUPPORTED') throw new ClipError('EUNSUPPORTED', `${where}: ${field}: ${e.message}`);
    throw new ClipError('ECORRUPT', `${where}: ${field} has a malformed digest "${digest}"`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new ClipError('ECORRUPT', `${where}: ${field} has no valid size`);
  }
  const desc: Descriptor = { mediaType, digest, size };
  if (value.platform !== undefined) {
    const p = value.platform;
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string') {
      throw new ClipError('ECORRUPT', `${where}: ${field}.platform needs os and architecture`);
    }
    desc.platform = { os: p.os, architecture: p.architecture };
    if (typeof p.variant === 'string' && p.variant) desc.platform.variant = p.variant;
    if (typeof p['os.version'] === 'string') desc.platform['os.version'] = p['os.version'];
    if (Array.isArray(p['os.features'])) desc.platform['os.features'] = p['os.features'].filter((f): f is string => typeof f === 'string');
  }
  const annotations = stringMap(value.annotations, where, `${field}.annotations`);
  if (annotations) desc.annotations = annotations;
  if (Array.isArray(value.urls)) desc.urls = value.urls.filter((u): u is string => typeof u === 'string');
  return desc;
}

function parseConfig(bytes: Buffer, where: string): ImageConfig {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ClipError('ECORRUPT', `${where}: image config is not valid JSON`);
  }
  if (!isObject(json)) throw new ClipError('ECORRUPT', `${where}: image config is not a JSON object`);
  const rootfs = json.rootfs;
  if (typeof json.os !== 'string' || typeof json.architecture !== 'string') {
    throw new ClipError('ECORRUPT', `${where}: image config has no os/architecture`);
  }
  if (!isObject(rootfs) || !Array.isArray(rootfs.diff_ids) || !rootfs.diff_ids.every((d) => typeof d === 'string')) {
    throw new ClipError('ECORRUPT', `${where}: image config has no rootfs.diff_ids`);
  }
  for (const d of rootfs.diff_ids as string[]) {
    try {
      parseDigest(d);
    } catch {
      throw new ClipError('ECORRUPT', `${where}: image config has a malformed diff_id "${d}"`);
    }
  }
  return json as ImageConfig;
}

function stringMap(value: unknown, where: string, field: string): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value) || !Object.values(value).every((v) => typeof v === 'string')) {
    throw new ClipError('ECORRUPT', `${where}: ${field} must map strings to strings`);
  }
  return value as Record<string, string>;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The descriptor of manifest bytes fetched by tag: digest computed here. */
export function manifestDescriptorFor(bytes: Buffer, mediaType: string | undefined): Descriptor {
  let type = mediaType;
  const known = [...MANIFEST_MEDIA_TYPES, MediaTypes.dockerManifestV1, MediaTypes.dockerManifestV1Signed] as string[];
  if (!type || !known.includes(type)) {
    // A generic Content-Type (application/json): go by the JSON's own mediaType, else its shape.
    type = undefined;
    try {
      const json: unknown = JSON.parse(bytes.toString('utf8'));
      if (isObject(json)) {
        if (typeof json.mediaType === 'string') type = json.mediaType;
        else if (Array.isArray(json.manifests)) type = MediaTypes.ociIndex;
        else if (json.schemaVersion === 1) type = MediaTypes.dockerManifestV1;
      }
    } catch {
      // parseManifestOrIndex reports malformed JSON with context.
    }
  }
  return { mediaType: type ?? MediaTypes.ociManifest, digest: digestOf(bytes), size: bytes.length };
}

/**
 * Checks a range against a descriptor. Errors: EINVAL when not
 * 0 <= begin <= end <= size or not integers.
 */
export function checkRange(desc: Descriptor, begin: number, end: number, where: string): void {
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin || end > desc.size) {
    throw new ClipError('EINVAL', `${where}: range [${begin}, ${end}) is outside blob ${desc.digest} of ${desc.size} bytes`);
  }
}
