/**
 * A miss handler that reads straight from the image's OCI layout directory:
 * each layer's blob file through its checkpoints (LayerReader), so a miss
 * inflates only from the nearest checkpoint. This is what a mount of an
 * archive indexed from `oci:DIR` uses until the storage tiers are plugged in
 * (the lead replaces it with LayerStore.read), and what the mount tests use
 * for the cold path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ClipError } from '../errors';
import { ClipArchive } from '../archive/reader';
import { LayerReader } from '../engine/layer';
import { parseImageReference } from '../oci/reference';
import type { MountLayer, ReadMiss } from './mount';

/** The layout directory an archive was indexed from, or null when it came from a registry. */
export function layoutDirOf(archive: ClipArchive): string | null {
  const reference = archive.imageConfig().reference;
  if (typeof reference !== 'string' || !reference.startsWith('oci:')) return null;
  const ref = parseImageReference(reference);
  return ref.transport === 'layout' ? path.resolve(ref.path) : null;
}

/**
 * A ReadMiss over the blobs of `layoutDir` (default: the archive's own
 * `oci:` reference). Errors (from the returned function): ENOENT when a
 * blob is missing, and LayerReader's errors.
 */
export function layoutReadMiss(archive: ClipArchive, layoutDir?: string): ReadMiss {
  const dir = layoutDir ?? layoutDirOf(archive);
  if (!dir) throw new ClipError('EINVAL', `${archive.path}: not indexed from an OCI layout; give the layout directory`);
  const readers = new Map<number, LayerReader>();
  const readerFor = (layer: MountLayer): LayerReader => {
    let reader = readers.get(layer.index);
    if (!reader) {
      const hex = layer.digest.replace(/^sha256:/, '');
      const blob = path.join(dir, 'blobs', 'sha256', hex);
      if (!fs.existsSync(blob)) throw new ClipError('ENOENT', `layer blob ${layer.digest} is not in ${dir}`);
      reader = new LayerReader(archive.checkpoints(layer.index), blob);
      readers.set(layer.index, reader);
    }
    return reader;
  };
  return async (layer, offset, length) => readerFor(layer).read(offset, length);
}
