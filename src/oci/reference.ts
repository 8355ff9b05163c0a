/**
 * Image references: the strings a person types to name an image, parsed into
 * where it lives (a registry or an OCI image layout directory) and which
 * manifest (a tag or a digest). Three forms:
 *
 *   oci:PATH[:TAG|@DIGEST]     an OCI image layout directory. The tag starts
 *                              at the last ':' after the last '/', so
 *                              `oci:/srv/a:b/img:v1` is PATH /srv/a:b/img, tag
 *                              v1. A directory whose last component contains
 *                              ':' is written with a trailing '/':
 *                              `oci:/srv/img:v1/` is PATH /srv/img:v1, no tag.
 *   docker://NAME              a registry image (skopeo's transport prefix);
 *                              NAME as below.
 *   NAME                       a registry image with Docker's normalisation:
 *                              `alpine` is registry-1.docker.io/library/alpine:latest,
 *                              `user/img` is on Docker Hub, and the first
 *                              component is a registry host when it contains
 *                              '.' or ':', is `localhost`, or has an uppercase
 *                              letter (`localhost:5000/x`, `127.0.0.1:5000/x:y`,
 *                              `ghcr.io/o/r@sha256:…`, `[::1]:5000/x`).
 *
 * A reference with neither tag nor digest means tag `latest` for registries
 * and "the only manifest" for layouts. With both (`name:tag@digest`), the
 * digest decides and the tag is kept only for display.
 */
import { ClipError } from '../errors';
import { parseDigest } from './digest';

export interface RegistryReference {
  transport: 'registry';
  /** host[:port] of the Distribution API endpoint (registry-1.docker.io for Docker Hub). */
  host: string;
  /** Repository path, e.g. `library/alpine`. */
  repository: string;
  tag?: string;
  digest?: string;
}

export interface LayoutReference {
  transport: 'layout';
  /** The layout directory, as written (relative paths stay relative). */
  path: string;
  tag?: string;
  digest?: string;
}

export type ImageReference = RegistryReference | LayoutReference;

/** The Docker Hub names people write, and the host that serves its API. */
export const DOCKER_HUB_HOST = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', DOCKER_HUB_HOST]);

const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const HOST_LABEL = '(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])';
const HOST = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?$`);

/**
 * Parses an image reference (see the file comment for the forms).
 * Errors: EINVAL with one sentence naming what is wrong; EUNSUPPORTED for a
 * digest algorithm other than sha256/sha512.
 */
export function parseImageReference(text: string): ImageReference {
  if (typeof text !== 'string' || text.length === 0) {
    throw new ClipError('EINVAL', 'an image reference must be a non-empty string');
  }
  if (/\s/.test(text)) throw new ClipError('EINVAL', `image reference "${text}" contains whitespace`);
  if (text.startsWith('oci:')) return parseLayoutReference(text, text.slice('oci:'.length));
  if (text.startsWith('docker://')) return parseRegistryReference(text, text.slice('docker://'.length));
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//.exec(text);
  if (scheme) {
    throw new ClipError('EINVAL', `image reference "${text}": transport "${scheme[1]}://" is not supported (use oci:PATH or docker://NAME)`);
  }
  return parseRegistryReference(text, text);
}

/** The reference back as text, in its canonical form (`oci:…` or `host/repo:tag@digest`). */
export function formatImageReference(ref: ImageReference): string {
  const suffix = `${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
  if (ref.transport === 'layout') {
    // Keep the round trip exact for a last component with ':' and no tag.
    const lastSlash = ref.path.lastIndexOf('/');
    const needsSlash = ref.tag === undefined && ref.path.indexOf(':', lastSlash + 1) >= 0;
    return `oci:${ref.path}${needsSlash ? '/' : ''}${suffix}`;
  }
  return `${ref.host}/${ref.repository}${suffix}`;
}

/** What to ask the source for: the digest if there is one, else the tag (undefined: the default). */
export function referenceTarget(ref: ImageReference): string | undefined {
  return ref.digest ?? ref.tag;
}

/** Splits `NAME[:TAG][@DIGEST]` where the tag is after the last '/'. */
function splitTagAndDigest(whole: string, rest: string): { name: string; tag?: string; digest?: string } {
  let name = rest;
  let digest: string | undefined;
  let tag: string | undefined;
  const at = name.lastIndexOf('@');
  if (at >= 0 && at > name.lastIndexOf('/')) {
    digest = name.slice(at + 1);
    name = name.slice(0, at);
    try {
      parseDigest(digest);
    } catch (e) {
      if (e instanceof ClipError && e.code === 'EUNSUPPORTED') throw e;
      throw new ClipError('EINVAL', `image reference "${whole}": "${digest}" is not a digest (want sha256:<64 hex digits>)`);
    }
  }
  const colon = name.lastIndexOf(':');
  if (colon >= 0 && colon > name.lastIndexOf('/')) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!TAG.test(tag)) {
      throw new ClipError('EINVAL', `image reference "${whole}": "${tag}" is not a valid tag (letters, digits, '_', '.', '-'; at most 128)`);
    }
  }
  return { name, tag, digest };
}

function parseLayoutReference(whole: string, rest: string): LayoutReference {
  const { name, tag, digest } = splitTagAndDigest(whole, rest);
  // A trailing '/' is how a directory with ':' in its last component is named.
  const dir = name.length > 1 ? name.replace(/\/+$/, '') : name;
  if (dir.length === 0) throw new ClipError('EINVAL', `image reference "${whole}" names no layout directory (want oci:PATH[:TAG])`);
  const ref: LayoutReference = { transport: 'layout', path: dir };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

function parseRegistryReference(whole: string, rest: string): RegistryReference {
  const { name, tag, digest } = splitTagAndDigest(whole, rest);
  if (name.length === 0) throw new ClipError('EINVAL', `image reference "${whole}" names no repository`);
  const slash = name.indexOf('/');
  const first = slash >= 0 ? name.slice(0, slash) : '';
  const firstIsHost =
    slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase());
  let host = firstIsHost ? first : 'docker.io';
  let repository = firstIsHost ? name.slice(slash + 1) : name;
  if (!HOST.test(host)) throw new ClipError('EINVAL', `image reference "${whole}": "${host}" is not a valid registry host`);
  const port = /:(\d+)$/.exec(host.replace(/^\[[^\]]*\]/, ''));
  if (port && Number(port[1]) > 65535) throw new ClipError('EINVAL', `image reference "${whole}": port ${port[1]} is out of range`);
  if (DOCKER_HUB_ALIASES.has(host.toLowerCase())) {
    host = DOCKER_HUB_HOST;
    // Docker Hub's official images live under library/.
    if (!repository.includes('/')) repository = `library/${repository}`;
  }
  if (repository.length === 0) throw new ClipError('EINVAL', `image reference "${whole}" names no repository after the host`);
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      const hint = component !== component.toLowerCase() ? ' (repository names must be lowercase)' : '';
      throw new ClipError('EINVAL', `image reference "${whole}": "${component}" is not a valid repository component${hint}`);
    }
  }
  if (host.length + 1 + repository.length > 255) {
    throw new ClipError('EINVAL', `image reference "${whole}": the name is longer than 255 characters`);
  }
  const ref: RegistryReference = { transport: 'registry', host, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  if (tag === undefined && digest === undefined) ref.tag = 'latest';
  return ref;
}
