/**
 * The registry source against a real registry (Debian's docker-registry,
 * started here on loopback), with images pushed by skopeo: the demo image
 * resolved from the registry and from its layout agree; ranges equal the
 * layout's blob bytes; Basic auth and token auth (a token server in this
 * process signing RS256 JWTs) accept and refuse as they should; a
 * multi-platform index pushed with `skopeo copy --all` resolves per
 * platform; and a fault-injecting proxy in front of the registry checks
 * retries, resumption, digest checks and redirects that must not carry the
 * Authorization header.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openImageSource } from '../src/oci';
import { OciLayoutSource } from '../src/oci/layout';
import { parsePlatform } from '../src/oci/platform';
import { parseImageReference, referenceTarget } from '../src/oci/reference';
import { RegistrySource, RegistrySourceOptions } from '../src/oci/registry';
import { MediaTypes, resolveImage, ResolvedImage } from '../src/oci/source';
import { drain, rejectsWith, rng } from './fixtures';
import {
  buildTinyImage,
  buildTwoPlatformLayout,
  demoLayout,
  FaultProxy,
  RegistryHandle,
  scratchDir,
  startFaultProxy,
  startRegistry,
  startTokenServer,
  TokenServer,
} from './registry-harness';

const AMD64 = parsePlatform('linux/amd64');
/** No ambient credentials (developer's ~/.docker, CLIP_REGISTRY_*) in these tests. */
const CLEAN_ENV = { HOME: scratchDir('clip-home-') };
/** Fast retries so fault tests take milliseconds. */
const FAST = { maxAttempts: 4, retryBaseMs: 1, retryMaxMs: 5 };

function source(host: string, repository: string, options: Partial<RegistrySourceOptions> = {}): RegistrySource {
  return new RegistrySource({ host, repository, insecure: true, env: CLEAN_ENV, ...FAST, ...options });
}



async function withSource<T>(s: RegistrySource, fn: (s: RegistrySource) => Promise<T>): Promise<T> {
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

/** The demo image as the layout has it: the oracle for everything pulled from registries. */
let demo: ResolvedImage;
let tinyLayout: string;

before(async () => {
  const layout = await OciLayoutSource.open(demoLayout());
  demo = await resolveImage(layout, 'bookworm', AMD64);
  await layout.close();
  tinyLayout = scratchDir('clip-tiny-');
  buildTinyImage(tinyLayout);
});

describe('registry without auth', () => {
  let registry: RegistryHandle;
  before(async () => {
    registry = await startRegistry();
    await registry.push(`oci:${demoLayout()}:bookworm`, 'demo:bookworm');
  });
  after(() => registry?.stop());

  it('resolves the demo image like the layout does, every blob verified', async () => {
    await withSource(source(registry.host, 'demo'), async (s) => {
      const image = await resolveImage(s, 'bookworm', AMD64);
      assert.equal(image.manifestDescriptor.digest, demo.manifestDescriptor.digest);
      assert.equal(image.manifestDescriptor.mediaType, MediaTypes.ociManifest);
      assert.equal(image.configDescriptor.digest, demo.configDescriptor.digest);
      assert.deepEqual(image.layers, demo.layers);
      assert.deepEqual(image.diffIds, demo.diffIds);
      assert.deepEqual(image.config, demo.config);
      assert.equal(image.source, `registry ${registry.host}/demo`);
      for (const layer of image.layers) assert.deepEqual(await drain(s.openBlob(layer)), { digest: layer.digest, size: layer.size });
      // By digest too.
      const byDigest = await s.fetchManifest(demo.manifestDescriptor.digest);
      assert.equal(byDigest.descriptor.digest, demo.manifestDescriptor.digest);
    });
  });

  it('reads random ranges equal to the layout blob file', async () => {
    const layer = demo.layers[0];
    const file = path.join(demoLayout(), 'blobs', 'sha256', layer.digest.slice(7));
    const fd = fs.openSync(file, 'r');
    await withSource(source(registry.host, 'demo'), async (s) => {
      const random = rng(11);
      const cases: Array<[number, number]> = [
        [0, 1],
        [0, 65536],
        [layer.size - 1, layer.size],
        [1000, 1000],
      ];
      for (let i = 0; i < 30; i++) {
        const begin = Math.floor(random() * layer.size);
        cases.push([begin, Math.min(layer.size, begin + 1 + Math.floor(random() * 2_000_000))]);
      }
      // Concurrently, as the storage tier will.
      await Promise.all(
        cases.map(async ([begin, end]) => {
          const want = Buffer.alloc(end - begin);
          fs.readSync(fd, want, 0, want.length, begin);
          const got = await s.readBlobRange(layer, begin, end);
          assert.ok(got.equals(want), `range [${begin}, ${end})`);
        }),
      );
      await rejectsWith(s.readBlobRange(layer, 0, layer.size + 1), 'EINVAL', /outside/);
    });
    fs.closeSync(fd);
  });

  it('says ENOENT for an unknown tag, repository or blob', async () => {
    await withSource(source(registry.host, 'demo'), async (s) => {
      await rejectsWith(resolveImage(s, 'nope', AMD64), 'ENOENT', /unknown image: manifest nope of .*demo not found \(404\).*MANIFEST_UNKNOWN/);
      await rejectsWith(drain(s.openBlob({ mediaType: 'x', digest: `sha256:${'0'.repeat(64)}`, size: 3 })), 'ENOENT', /BLOB_UNKNOWN/);
    });
    await withSource(source(registry.host, 'nothing/here'), (s) => rejectsWith(s.fetchManifest('latest'), 'ENOENT', /nothing\/here not found \(404\)/));
  });

  it('resolves a two-platform index pushed with skopeo --all, and names the platforms it has', async () => {
    const dir = scratchDir('clip-multi-');
    const { index, armManifest, armConfig } = buildTwoPlatformLayout(dir, demo);
    await registry.push(`oci:${dir}:multi`, 'demo-multi:multi', { all: true });

    await withSource(source(registry.host, 'demo-multi'), async (s) => {
      const amd = await resolveImage(s, 'multi', AMD64);
      assert.equal(amd.indexDescriptor?.digest, index.digest, 'skopeo --all keeps the index byte for byte');
      assert.equal(amd.manifestDescriptor.digest, demo.manifestDescriptor.digest);
      assert.equal(amd.config.architecture, 'amd64');
      for (const want of ['linux/arm64', 'linux/arm64/v8']) {
        const arm = await resolveImage(s, 'multi', parsePlatform(want));
        assert.equal(arm.manifestDescriptor.digest, armManifest.digest);
        assert.equal(arm.configDescriptor.digest, armConfig.digest);
        assert.equal(arm.config.architecture, 'arm64');
        assert.deepEqual(arm.layers, amd.layers);
      }
      await rejectsWith(
        resolveImage(s, 'multi', parsePlatform('linux/ppc64le')),
        'ENOENT',
        /no manifest for linux\/ppc64le in registry .*demo-multi \(multi\); available: linux\/amd64, linux\/arm64/,
      );
    });
  });

  describe('faults, through a proxy', () => {
    let proxy: FaultProxy;
    before(async () => {
      proxy = await startFaultProxy(registry.url);
    });
    after(() => proxy?.stop());

    const isManifest = (p: string) => p.includes('/manifests/');
    const isLayer = (p: string) => p.endsWith(`/blobs/${demo.layers[0].digest}`);

    it('retries 500s and succeeds', async () => {
      let failures = 0;
      proxy.setHandler((req) => (isManifest(req.path) && failures++ < 2 ? { kind: 'status', status: 500 } : { kind: 'forward' }));
      const seen = proxy.requests.length;
      await withSource(source(proxy.host, 'demo'), async (s) => {
        const image = await resolveImage(s, 'bookworm', AMD64);
        assert.equal(image.manifestDescriptor.digest, demo.manifestDescriptor.digest);
      });
      assert.equal(failures, 3);
      assert.equal(proxy.requests.slice(seen).filter((r) => isManifest(r.path)).length, 3);
    });

    it('gives up on 500 forever after bounded, fast retries with a clear error', async () => {
      proxy.setHandler(() => ({ kind: 'status', status: 503 }));
      const seen = proxy.requests.length;
      const started = Date.now();
      await withSource(source(proxy.host, 'demo'), (s) =>
        rejectsWith(s.fetchManifest('bookworm'), 'EIO', /GET manifest bookworm of .*demo: .* answered 503 \(INJECTED: injected 503\) \(gave up after 4 tries\)/),
      );
      assert.equal(proxy.requests.length - seen, 4);
      assert.ok(Date.now() - started < 2000);
    });

    it('fails fast when told to come back much later', async () => {
      proxy.setHandler(() => ({ kind: 'status', status: 429, headers: { 'retry-after': '3600' } }));
      await withSource(source(proxy.host, 'demo'), (s) => rejectsWith(s.fetchManifest('bookworm'), 'EIO', /429.*retry after 3600 s/));
    });

    it('retries refused connections, then says so', async () => {
      const dead = await startFaultProxy(registry.url);
      const host = dead.host;
      await dead.stop();
      await withSource(source(host, 'demo'), (s) => rejectsWith(s.fetchManifest('bookworm'), 'EIO', /ECONNREFUSED.*gave up after 4 tries/));
    });

    it('resumes a blob cut off mid-body with a Range request, and the bytes are right', async () => {
      let cuts = 0;
      proxy.setHandler((req) => (isLayer(req.path) && cuts++ < 2 ? { kind: 'truncate', after: 10_000_000 + cuts * 12_345 } : { kind: 'forward' }));
      const seen = proxy.requests.length;
      await withSource(source(proxy.host, 'demo'), async (s) => {
        assert.deepEqual(await drain(s.openBlob(demo.layers[0])), { digest: demo.layers[0].digest, size: demo.layers[0].size });
      });
      const ranges = proxy.requests.slice(seen).filter((r) => isLayer(r.path)).map((r) => r.headers.range);
      assert.equal(ranges.length, 3);
      assert.equal(ranges[0], undefined);
      assert.match(String(ranges[1]), /^bytes=\d+-$/);
      assert.ok(Number(/=(\d+)-/.exec(String(ranges[1]))?.[1]) > 0);
    });

    it('retries 429 with a small Retry-After', async () => {
      let failures = 0;
      proxy.setHandler((req) =>
        isManifest(req.path) && failures++ < 2 ? { kind: 'status', status: 429, headers: { 'retry-after': '0' } } : { kind: 'forward' },
      );
      await withSource(source(proxy.host, 'demo'), (s) => s.fetchManifest('bookworm'));
      assert.equal(failures, 3);
    });

    it('times out a stalled body and resumes it', async () => {
      let stalls = 0;
      proxy.setHandler((req) => (isLayer(req.path) && stalls++ < 1 ? { kind: 'stall', after: 3_000_000 } : { kind: 'forward' }));
      const seen = proxy.requests.length;
      const started = Date.now();
      await withSource(source(proxy.host, 'demo', { timeoutMs: 300 }), async (s) => {
        assert.deepEqual(await drain(s.openBlob(demo.layers[0])), { digest: demo.layers[0].digest, size: demo.layers[0].size });
      });
      assert.ok(Date.now() - started < 10_000);
      const ranges = proxy.requests.slice(seen).filter((r) => isLayer(r.path)).map((r) => r.headers.range);
      assert.deepEqual(ranges, [undefined, 'bytes=3000000-']);
    });

    it('resumes against a registry that answers the resume with the whole blob', async () => {
      let cuts = 0;
      proxy.setHandler((req) =>
        isLayer(req.path) ? (cuts++ < 1 ? { kind: 'truncate', after: 5_000_000 } : { kind: 'forward', dropHeaders: ['range'] }) : { kind: 'forward' },
      );
      await withSource(source(proxy.host, 'demo'), async (s) => {
        assert.deepEqual(await drain(s.openBlob(demo.layers[0])), { digest: demo.layers[0].digest, size: demo.layers[0].size });
      });
    });

    it('fails with ETRUNCATED when every try is cut short', async () => {
      proxy.setHandler((req) => (isLayer(req.path) ? { kind: 'truncate', after: 1_000_000 } : { kind: 'forward' }));
      await withSource(source(proxy.host, 'demo'), (s) => rejectsWith(drain(s.openBlob(demo.layers[0])), 'ETRUNCATED', new RegExp(`cut short after \\d+ of ${demo.layers[0].size} bytes .*gave up after 4 tries`)));
      // Ranges too: a short range body is retried, then refused.
      await withSource(source(proxy.host, 'demo'), (s) => rejectsWith(s.readBlobRange(demo.layers[0], 0, 3_000_000), 'ETRUNCATED'));
    });

    it('retries a range cut short and returns the right bytes', async () => {
      let cuts = 0;
      proxy.setHandler((req) => (isLayer(req.path) && cuts++ < 1 ? { kind: 'truncate', after: 100_000 } : { kind: 'forward' }));
      const file = path.join(demoLayout(), 'blobs', 'sha256', demo.layers[0].digest.slice(7));
      const want = Buffer.alloc(2_000_000);
      const fd = fs.openSync(file, 'r');
      fs.readSync(fd, want, 0, want.length, 1_234_567);
      fs.closeSync(fd);
      await withSource(source(proxy.host, 'demo'), async (s) => {
        assert.ok((await s.readBlobRange(demo.layers[0], 1_234_567, 3_234_567)).equals(want));
      });
      assert.equal(cuts, 2);
    });

    it('refuses flipped bytes with EDIGEST: in a layer, the config, a manifest', async () => {
      proxy.setHandler((req) => (isLayer(req.path) ? { kind: 'corrupt', at: 50_000_000 } : { kind: 'forward' }));
      await withSource(source(proxy.host, 'demo'), (s) => rejectsWith(drain(s.openBlob(demo.layers[0])), 'EDIGEST', /does not match its digest/));

      proxy.setHandler((req) => (req.path.endsWith(demo.configDescriptor.digest) ? { kind: 'corrupt', at: 10 } : { kind: 'forward' }));
      await withSource(source(proxy.host, 'demo'), (s) => rejectsWith(resolveImage(s, 'bookworm', AMD64), 'EDIGEST'));

      proxy.setHandler((req) => (isManifest(req.path) ? { kind: 'corrupt', at: 20 } : { kind: 'forward' }));
      await withSource(source(proxy.host, 'demo'), async (s) => {
        // By digest: the bytes must hash to it. By tag: they must hash to Docker-Content-Digest.
        await rejectsWith(s.fetchManifest(demo.manifestDescriptor.digest), 'EDIGEST');
        await rejectsWith(s.fetchManifest('bookworm'), 'EDIGEST', /the registry says/);
      });
    });

    it('reads a range of a small blob from a registry that ignores Range, but refuses for a layer', async () => {
      proxy.setHandler(() => ({ kind: 'forward', dropHeaders: ['range'] }));
      const config = fs.readFileSync(path.join(demoLayout(), 'blobs', 'sha256', demo.configDescriptor.digest.slice(7)));
      await withSource(source(proxy.host, 'demo'), async (s) => {
        assert.ok((await s.readBlobRange(demo.configDescriptor, 5, 50)).equals(config.subarray(5, 50)));
        await rejectsWith(s.readBlobRange(demo.layers[0], 5, 50), 'EUNSUPPORTED', /ignored the Range header/);
      });
    });
  });
});

describe('sources from references', () => {
  it('opens a layout and a registry from parsed references', async () => {
    const registry = await startRegistry();
    try {
      await registry.push(`oci:${tinyLayout}:tiny`, 'refs/tiny:v2');
      for (const text of [`oci:${tinyLayout}:tiny`, `oci:${tinyLayout}`, `${registry.host}/refs/tiny:v2`, `docker://${registry.host}/refs/tiny:v2`]) {
        const ref = parseImageReference(text);
        const s = await openImageSource(ref, { insecure: true, env: CLEAN_ENV });
        try {
          const image = await resolveImage(s, referenceTarget(ref), AMD64);
          assert.equal(image.layers.length, 1, text);
        } finally {
          await s.close();
        }
      }
    } finally {
      await registry.stop();
    }
  });
});

describe('registry with Basic auth', () => {
  let registry: RegistryHandle;
  before(async () => {
    registry = await startRegistry({ auth: 'basic' });
    await registry.push(`oci:${tinyLayout}:tiny`, 'tiny:v1');
  });
  after(() => registry?.stop());

  const pull = (s: RegistrySource) =>
    withSource(s, async (src) => {
      const image = await resolveImage(src, 'v1', AMD64);
      await drain(src.openBlob(image.layers[0]));
      return image;
    });

  it('pulls with the right credentials from the option, the environment and a DOCKER_CONFIG config.json', async () => {
    const creds = registry.credentials!;
    await pull(source(registry.host, 'tiny', { credentials: creds }));
    await pull(source(registry.host, 'tiny', { env: { ...CLEAN_ENV, CLIP_REGISTRY_USERNAME: creds.username, CLIP_REGISTRY_PASSWORD: creds.password } }));
    const dockerConfig = scratchDir('clip-docker-config-');
    const auth = Buffer.from(`${creds.username}:${creds.password}`).toString('base64');
    fs.writeFileSync(path.join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [`http://${registry.host}`]: { auth } } }));
    await pull(source(registry.host, 'tiny', { env: { ...CLEAN_ENV, DOCKER_CONFIG: dockerConfig } }));
  });

  it('refuses wrong or missing credentials with EAUTH', async () => {
    await rejectsWith(
      pull(source(registry.host, 'tiny', { credentials: { username: 'clip', password: 'wrong' } })),
      'EAUTH',
      /authentication to 127\.0\.0\.1:\d+ refused \(401\) for user "clip" \(credentials from the credentials option\)/,
    );
    await rejectsWith(pull(source(registry.host, 'tiny')), 'EAUTH', /requires credentials and no credentials were found in the credentials option/);
  });

  it('never sends the Authorization header to the host a blob is redirected to', async () => {
    const creds = registry.credentials!;
    const basic = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    // B plays a blob store: it authorises by itself (here: adds the registry's credentials).
    const blobStore = await startFaultProxy(registry.url, { addHeaders: { authorization: basic } });
    const front = await startFaultProxy(registry.url);
    try {
      front.setHandler((req) =>
        req.path.includes('/blobs/') ? { kind: 'redirect', location: `http://localhost:${blobStore.port}${req.path}?signed=1` } : { kind: 'forward' },
      );
      const image = await pull(source(front.host, 'tiny', { credentials: creds }));
      assert.equal(image.config.architecture, 'amd64');
      const blobRequests = blobStore.requests;
      assert.ok(blobRequests.length >= 2, 'config and layer came from the blob store');
      for (const r of blobRequests) assert.equal(r.headers.authorization, undefined, `${r.path} got an Authorization header`);
      assert.ok(front.requests.some((r) => r.headers.authorization === basic), 'the registry itself did get credentials');
      // Range reads follow the redirect too, keeping the Range header.
      await withSource(source(front.host, 'tiny', { credentials: creds }), async (s) => {
        const bytes = await s.readBlobRange(image.layers[0], 10, 20);
        assert.equal(bytes.length, 10);
      });
      assert.ok(blobStore.requests.some((r) => r.headers.range === 'bytes=10-19' && r.headers.authorization === undefined));
    } finally {
      await blobStore.stop();
      await front.stop();
    }
  });
});

describe('registry with token auth', () => {
  let tokens: TokenServer;
  let registry: RegistryHandle;
  before(async () => {
    tokens = await startTokenServer();
    registry = await startRegistry({ auth: 'token', tokenServer: tokens });
    await registry.push(`oci:${tinyLayout}:tiny`, 'tiny:v1');
  });
  after(async () => {
    await registry?.stop();
    await tokens?.stop();
  });

  it('pulls anonymously with a pull token, fetched once and reused', async () => {
    tokens.setPolicy((_user, requested) => requested.map((s) => ({ ...s, actions: s.actions.filter((a) => a === 'pull') })));
    const seen = tokens.requests.length;
    await withSource(source(registry.host, 'tiny'), async (s) => {
      const image = await resolveImage(s, 'v1', AMD64);
      await drain(s.openBlob(image.layers[0]));
      await s.readBlobRange(image.layers[0], 0, 100);
    });
    const asked = tokens.requests.slice(seen);
    assert.equal(asked.length, 1, 'one token for manifest, config, layer and range');
    assert.equal(asked[0].user, null);
    assert.deepEqual(asked[0].scopes, [{ type: 'repository', name: 'tiny', actions: ['pull'] }]);
  });

  it('fetches a new token when the cached one expires', async () => {
    tokens.setExpiresIn(2); // cached for 1.8 s
    const seen = tokens.requests.length;
    try {
      await withSource(source(registry.host, 'tiny'), async (s) => {
        await s.fetchManifest('v1');
        await s.fetchManifest('v1');
        assert.equal(tokens.requests.length - seen, 1);
        await new Promise((r) => setTimeout(r, 2000));
        await s.fetchManifest('v1');
        assert.equal(tokens.requests.length - seen, 2);
      });
    } finally {
      tokens.setExpiresIn(300);
    }
  });

  it('sends credentials to the token server when it has them', async () => {
    const seen = tokens.requests.length;
    await withSource(source(registry.host, 'tiny', { credentials: registry.credentials }), (s) => resolveImage(s, 'v1', AMD64));
    assert.equal(tokens.requests[seen].user, registry.credentials!.username);
  });

  it('refuses with EAUTH when the token server denies, or grants nothing', async () => {
    tokens.setPolicy(() => 'deny');
    await withSource(source(registry.host, 'tiny'), (s) =>
      rejectsWith(resolveImage(s, 'v1', AMD64), 'EAUTH', /refused \(401\) by token server http:\/\/127\.0\.0\.1:\d+\/token for anonymous access .*DENIED/),
    );
    tokens.setPolicy(() => []);
    await withSource(source(registry.host, 'tiny'), (s) =>
      rejectsWith(resolveImage(s, 'v1', AMD64), 'EAUTH', /refused \(401\) for repository:tiny:pull with a token .*insufficient_scope/),
    );
    tokens.setPolicy((_user, requested) => requested);
    await withSource(source(registry.host, 'tiny', { credentials: { username: 'clip', password: 'nope' } }), (s) =>
      rejectsWith(resolveImage(s, 'v1', AMD64), 'EAUTH', /token server .* user "clip" .*bad username or password/),
    );
  });
});
