/**
 * Image sources in one place: parse a reference, open the source it names
 * (an OCI layout directory or a registry repository), resolve it to one
 * platform's manifest, config and layers.
 */
import { OciLayoutSource } from './layout';
import { ImageReference } from './reference';
import { RegistrySource, RegistrySourceOptions } from './registry';
import { ImageSource } from './source';

export type OpenSourceOptions = Omit<RegistrySourceOptions, 'host' | 'repository'>;

/**
 * Opens the source a parsed reference names. Registry options (credentials,
 * insecure, retries) are ignored for layouts.
 * Errors: as OciLayoutSource.open (ENOENT, ECORRUPT, EUNSUPPORTED); a registry
 * source sends nothing until the first fetch.
 */
export async function openImageSource(ref: ImageReference, options: OpenSourceOptions = {}): Promise<ImageSource> {
  if (ref.transport === 'layout') return OciLayoutSource.open(ref.path);
  return new RegistrySource({ ...options, host: ref.host, repository: ref.repository });
}

export { parseImageReference, formatImageReference, referenceTarget, DOCKER_HUB_HOST } from './reference';
export type { ImageReference, RegistryReference, LayoutReference } from './reference';
export { parsePlatform, formatPlatform, hostPlatform, normalizePlatform, platformMatches } from './platform';
export type { Platform } from './platform';
export { resolveImage, readWholeBlob, parseManifestOrIndex, MediaTypes, MANIFEST_MEDIA_TYPES } from './source';
export type { Descriptor, ImageSource, ResolvedImage, LayerDescriptor, LayerCompression, ImageManifest, ImageIndex, ImageConfig } from './source';
export { OciLayoutSource } from './layout';
export { RegistrySource } from './registry';
export type { RegistrySourceOptions } from './registry';
export { findCredentials, parseWwwAuthenticate } from './auth';
export type { Credentials, CredentialOptions, AuthChallenge } from './auth';
export { digestOf, parseDigest, DigestVerifier } from './digest';
export type { HttpClientOptions } from './http';
