/**
 * An image of 100k+ small files (built once with umoci into the fixtures
 * directory): indexed, mounted with an empty disk cache (misses through
 * the storage tiers, the layer filled in the background), and the mounted
 * tree equals `umoci unpack` entry by entry, contents included.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { ClipArchive } from '../src/archive/reader';
import { fixturesDir } from './fixtures';
import { manyFilesImage, ManyFilesImage } from './images';
import { assertSameTree, indexInto, mountpoint, PathRecord, scratchDir, walkTree, withMount } from './mount-helpers';

describe('an image of 100k+ entries', () => {
  let image: ManyFilesImage;
  let clip: string;
  let oracle: Record<string, PathRecord>;

  before(async () => {
    image = manyFilesImage(fixturesDir());
    const work = scratchDir('clip-mount-many-');
    clip = await indexInto(image.layout, 't', path.join(work, 'many.clip'));
    oracle = await walkTree(image.rootfs);
  });

  it('indexes every entry and mounts the same tree as umoci unpack', async () => {
    assert.equal(Object.keys(oracle).length, image.entries);
    assert.ok(image.entries >= 100_000);
    const archive = ClipArchive.open(clip);
    try {
      assert.equal(archive.info().direntCount + 1, image.entries, 'every name in the archive');
    } finally {
      archive.close();
    }
    const cacheDir = path.join(scratchDir('clip-mount-many-cache-'), 'cache');
    await withMount({ archive: clip, mountpoint: mountpoint(), cacheDir }, async (m) => {
      assertSameTree(await walkTree(m.mountpoint), oracle);
      const s = m.stats();
      assert.ok(s.reads >= 100_000 && s.missFailed === 0 && s.errors === 0, JSON.stringify(s));
    });
  });
});
