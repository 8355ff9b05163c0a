/**
 * The OCI layout source and image resolution, on the real demo image
 * (scripts/fixtures.sh: umoci-built Debian) and on small layouts written
 * here by hand: tags, digests, blob streaming and ranges checked against the
 * blob files, and every refusal (missing things, bad digests, truncated
 * blobs, unsupported media types, schema 1, unknown platforms).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OciLayoutSource } from '../src/oci/layout';
import { parsePlatform } from '../src/oci/platform';
import { Descriptor, MediaTypes, readWholeBlob, resolveImage } from '../src/oci/source';
import { drain, rejectsWith, rng, sha256File } from './fixtures';
import { buildTinyImage, buildTwoPlatformLayout, demoLayout, scratchDir, writeBlob, writeLayoutIndex } from './registry-harness';

const AMD64 = parsePlatform('linux/amd64');



describe('OCI layout: the demo image', () => {
  let source: OciLayoutSource;
  before(async () => {
    source = await OciLayoutSource.open(demoLayout());
  });
  after(() => source.close());

  it('resolves tag bookworm to a verified manifest, config and gzip layers', async () => {
    const image = await resolveImage(source, 'bookworm', AMD64);
    const index = JSON.parse(fs.readFileSync(path.join(demoLayout(), 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    assert.equal(image.manifestDescriptor.digest, index.manifests[0].digest);
    assert.equal(image.indexDescriptor, undefined);
    assert.equal(image.config.os, 'linux');
    assert.deepEqual(image.platform, { os: 'linux', architecture: 'amd64' });
    assert.ok(image.layers.length >= 1);
    assert.equal(image.diffIds.length, image.layers.length);
    for (const layer of image.layers) {
      assert.equal(layer.compression, 'gzip');
      assert.equal(layer.mediaType, MediaTypes.ociLayerGzip);
      assert.equal(sha256File(source.blobPath(layer.digest)), layer.digest);
    }
    // No tag and exactly one manifest: that one.
    assert.equal((await resolveImage(source, undefined, AMD64)).manifestDescriptor.digest, image.manifestDescriptor.digest);
    // By digest.
    assert.equal((await resolveImage(source, image.manifestDescriptor.digest, AMD64)).configDescriptor.digest, image.configDescriptor.digest);
  });

  it('streams each layer whole, verified, equal to the blob file', async () => {
    const image = await resolveImage(source, 'bookworm', AMD64);
    for (const layer of image.layers) {
      const got = await drain(source.openBlob(layer));
      assert.deepEqual(got, { digest: layer.digest, size: layer.size });
    }
  });

  it('reads random ranges exactly as the blob file has them', async () => {
    const image = await resolveImage(source, 'bookworm', AMD64);
    const layer = image.layers[0];
    const fd = fs.openSync(source.blobPath(layer.digest), 'r');
    try {
      const random = rng(7);
      const cases: Array<[number, number]> = [
        [0, 0],
        [0, 1],
        [0, 4096],
        [layer.size - 1, layer.size],
        [layer.size - 100_000, layer.size],
      ];
      for (let i = 0; i < 40; i++) {
        const begin = Math.floor(random() * layer.size);
        cases.push([begin, Math.min(layer.size, begin + 1 + Math.floor(random() * 300_000))]);
      }
      for (const [begin, end] of cases) {
        const want = Buffer.alloc(end - begin);
        fs.readSync(fd, want, 0, want.length, begin);
        assert.ok((await source.readBlobRange(layer, begin, end)).equals(want), `range [${begin}, ${end})`);
      }
    } finally {
      fs.closeSync(fd);
    }
    await rejectsWith(source.readBlobRange(layer, 0, layer.size + 1), 'EINVAL', /outside/);
    await rejectsWith(source.readBlobRange(layer, 10, 5), 'EINVAL');
    await rejectsWith(source.readBlobRange(layer, -1, 5), 'EINVAL');
  });

  it('names what is missing: tag, blob, directory, marker', async () => {
    await rejectsWith(resolveImage(source, 'nope', AMD64), 'ENOENT', /tag "nope" not found .* \(tags: bookworm\)/);
    await rejectsWith(source.fetchManifest(`sha256:${'0'.repeat(64)}`), 'ENOENT', /not found in OCI layout/);
    await rejectsWith(drain(source.openBlob({ mediaType: 'x', digest: `sha256:${'0'.repeat(64)}`, size: 1 })), 'ENOENT');
    await rejectsWith(OciLayoutSource.open('/nonexistent/clip-layout'), 'ENOENT', /does not exist/);
    await rejectsWith(OciLayoutSource.open(scratchDir()), 'ENOENT', /no oci-layout file/);
  });
});

describe('OCI layout: hand-made images', () => {
  it('verifies blobs: a flipped byte is EDIGEST, a short file ETRUNCATED, a long one EDIGEST', async () => {
    const dir = scratchDir('clip-layout-');
    buildTinyImage(dir);
    const source = await OciLayoutSource.open(dir);
    try {
      const image = await resolveImage(source, 'tiny', AMD64);
      const layer = image.layers[0];
      const file = source.blobPath(layer.digest);
      const good = fs.readFileSync(file);

      const flipped = Buffer.from(good);
      flipped[flipped.length >> 1] ^= 1;
      fs.writeFileSync(file, flipped);
      await rejectsWith(drain(source.openBlob(layer)), 'EDIGEST', /does not match its digest/);

      fs.writeFileSync(file, good.subarray(0, good.length - 10));
      await rejectsWith(drain(source.openBlob(layer)), 'ETRUNCATED');
      await rejectsWith(source.readBlobRange(layer, 0, layer.size), 'ETRUNCATED');

      fs.writeFileSync(file, Buffer.concat([good, Buffer.from('x')]));
      await rejectsWith(drain(source.openBlob(layer)), 'EDIGEST', /descriptor says/);

      fs.writeFileSync(file, good);
      assert.equal((await drain(source.openBlob(layer))).digest, layer.digest);

      // A tampered config is refused before it is used.
      const configFile = source.blobPath(image.configDescriptor.digest);
      const config = fs.readFileSync(configFile);
      fs.writeFileSync(configFile, Buffer.from(config.toString().replace('"amd64"', '"AMD64"')));
      await rejectsWith(resolveImage(source, 'tiny', AMD64), 'EDIGEST');
      fs.writeFileSync(configFile, config);
      // So is a tampered manifest.
      const manifestFile = source.blobPath(image.manifestDescriptor.digest);
      const manifest = fs.readFileSync(manifestFile);
      fs.writeFileSync(manifestFile, Buffer.from(manifest.toString().replace('"schemaVersion":2', '"schemaVersion":2 ')));
      await rejectsWith(resolveImage(source, 'tiny', AMD64), 'EDIGEST');
    } finally {
      await source.close();
    }
  });

  it('asks for a tag when a layout holds several images', async () => {
    const dir = scratchDir('clip-layout-');
    const a = buildTinyImage(dir, { tag: 'a', marker: 'a' });
    const indexA = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
    buildTinyImage(dir, { tag: 'b', marker: 'b' });
    const indexB = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
    writeLayoutIndex(dir, [...indexA.manifests, ...indexB.manifests]);
    const source = await OciLayoutSource.open(dir);
    try {
      await rejectsWith(resolveImage(source, undefined, AMD64), 'EINVAL', /holds 2 images; name one with :TAG \(tags: a, b\)/);
      assert.equal((await resolveImage(source, 'a', AMD64)).manifestDescriptor.digest, a);
      assert.deepEqual(await source.tags(), ['a', 'b']);
    } finally {
      await source.close();
    }
  });

  it('refuses zstd, foreign and unknown layers, schema 1 and non-image artifacts, naming the media type', async () => {
    const dir = scratchDir('clip-layout-');
    const layer = writeBlob(dir, 'not really a layer', 'x');
    const config = writeBlob(
      dir,
      JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] } }),
      MediaTypes.ociConfig,
    );
    const image = (layerType: string, configType: string = MediaTypes.ociConfig, extra: object = {}) =>
      writeBlob(
        dir,
        JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { ...config, mediaType: configType }, layers: [{ ...layer, mediaType: layerType, ...extra }] }),
        MediaTypes.ociManifest,
      );
    const schema1 = writeBlob(dir, JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }), MediaTypes.dockerManifestV1Signed);
    const tagged = (d: Descriptor, tag: string) => ({ ...d, annotations: { 'org.opencontainers.image.ref.name': tag } });
    writeLayoutIndex(dir, [
      tagged(image(MediaTypes.ociLayerZstd), 'zstd'),
      tagged(image('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'), 'nondist'),
      tagged(image(MediaTypes.dockerLayerForeign), 'foreign'),
      tagged(image(MediaTypes.ociLayerGzip, MediaTypes.ociConfig, { urls: ['https://example.com/x'] }), 'urls'),
      tagged(image('application/x-weird'), 'weird'),
      tagged(image(MediaTypes.ociLayerGzip, 'application/vnd.cncf.helm.config.v1+json'), 'helm'),
      tagged(schema1, 'schema1'),
      tagged(image(MediaTypes.dockerLayerGzip), 'docker'),
    ]);
    const source = await OciLayoutSource.open(dir);
    try {
      await rejectsWith(resolveImage(source, 'zstd', AMD64), 'EUNSUPPORTED', /tar\+zstd: zstd/);
      await rejectsWith(resolveImage(source, 'nondist', AMD64), 'EUNSUPPORTED', /nondistributable.*not supported/);
      await rejectsWith(resolveImage(source, 'foreign', AMD64), 'EUNSUPPORTED', /foreign/);
      await rejectsWith(resolveImage(source, 'urls', AMD64), 'EUNSUPPORTED', /external URLs/);
      await rejectsWith(resolveImage(source, 'weird', AMD64), 'EUNSUPPORTED', /application\/x-weird/);
      await rejectsWith(resolveImage(source, 'helm', AMD64), 'EUNSUPPORTED', /not a container image.*helm/);
      await rejectsWith(resolveImage(source, 'schema1', AMD64), 'EUNSUPPORTED', /schema 1/);
      const docker = await resolveImage(source, 'docker', AMD64);
      assert.equal(docker.layers[0].compression, 'gzip');
    } finally {
      await source.close();
    }
  });

  it('picks the platform from an image index, and lists what there is when nothing fits', async () => {
    const dir = scratchDir('clip-layout-');
    const demo = demoLayout();
    const demoSource = await OciLayoutSource.open(demo);
    const demoImage = await resolveImage(demoSource, 'bookworm', AMD64);
    await demoSource.close();
    const { index, armManifest, armConfig } = buildTwoPlatformLayout(dir, demoImage, {
      armConfigFields: { variant: 'v8' },
      extraManifests: [
        {
          ...writeBlob(dir, '{"schemaVersion":2}', MediaTypes.ociManifest),
          platform: { os: 'unknown', architecture: 'unknown' },
          annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
        },
      ],
    });
    const source = await OciLayoutSource.open(dir);
    try {
      const amd = await resolveImage(source, 'multi', AMD64);
      assert.equal(amd.manifestDescriptor.digest, demoImage.manifestDescriptor.digest);
      assert.equal(amd.indexDescriptor?.digest, index.digest);
      assert.deepEqual(amd.manifestDescriptor.platform, { os: 'linux', architecture: 'amd64' });
      for (const want of ['linux/arm64', 'linux/arm64/v8', 'linux/aarch64']) {
        const arm = await resolveImage(source, 'multi', parsePlatform(want));
        assert.equal(arm.manifestDescriptor.digest, armManifest.digest, want);
        assert.deepEqual(arm.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
        assert.deepEqual(arm.layers.map((l) => l.digest), amd.layers.map((l) => l.digest));
      }
      await rejectsWith(
        resolveImage(source, 'multi', parsePlatform('linux/s390x')),
        'ENOENT',
        /^no manifest for linux\/s390x in OCI layout .* \(multi\); available: linux\/amd64, linux\/arm64$/,
      );
      await rejectsWith(resolveImage(source, 'multi', parsePlatform('linux/arm64/v9')), 'ENOENT', /linux\/arm64\/v9/);
      // A config blob read whole goes through the same verification.
      assert.equal((await readWholeBlob(source, armConfig)).length, armConfig.size);
    } finally {
      await source.close();
    }
  });
});
