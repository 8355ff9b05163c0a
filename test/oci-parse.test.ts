/**
 * Image reference and platform parsing: table tests of the accepted forms,
 * Docker's normalisation, and the EINVAL sentences for malformed input;
 * WWW-Authenticate parsing; credential lookup from the environment and a
 * Docker config.json.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { ClipError } from '../src/errors';
import { findCredentials, parseWwwAuthenticate } from '../src/oci/auth';
import { parseDigest } from '../src/oci/digest';
import { formatPlatform, hostPlatform, parsePlatform, platformMatches } from '../src/oci/platform';
import { formatImageReference, ImageReference, parseImageReference, referenceTarget } from '../src/oci/reference';
import { scratchDir } from './registry-harness';

const D = `sha256:${'a'.repeat(64)}`;

function throwsCode(fn: () => unknown, code: string, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ClipError, `expected a ClipError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

describe('image references', () => {
  const table: Array<[string, ImageReference]> = [
    ['alpine', { transport: 'registry', host: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' }],
    ['alpine:3.19', { transport: 'registry', host: 'registry-1.docker.io', repository: 'library/alpine', tag: '3.19' }],
    ['user/img', { transport: 'registry', host: 'registry-1.docker.io', repository: 'user/img', tag: 'latest' }],
    ['docker.io/alpine', { transport: 'registry', host: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' }],
    ['index.docker.io/user/img:v1', { transport: 'registry', host: 'registry-1.docker.io', repository: 'user/img', tag: 'v1' }],
    ['localhost/x', { transport: 'registry', host: 'localhost', repository: 'x', tag: 'latest' }],
    ['localhost:5000/x', { transport: 'registry', host: 'localhost:5000', repository: 'x', tag: 'latest' }],
    ['127.0.0.1:5000/x:y', { transport: 'registry', host: '127.0.0.1:5000', repository: 'x', tag: 'y' }],
    ['[::1]:5000/a/b:c', { transport: 'registry', host: '[::1]:5000', repository: 'a/b', tag: 'c' }],
    ['ghcr.io/o/r/s@' + D, { transport: 'registry', host: 'ghcr.io', repository: 'o/r/s', digest: D }],
    ['ghcr.io/o/r:t@' + D, { transport: 'registry', host: 'ghcr.io', repository: 'o/r', tag: 't', digest: D }],
    ['Registry/x', { transport: 'registry', host: 'Registry', repository: 'x', tag: 'latest' }],
    ['x/a.b-c__d--e', { transport: 'registry', host: 'registry-1.docker.io', repository: 'x/a.b-c__d--e', tag: 'latest' }],
    ['docker://alpine', { transport: 'registry', host: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' }],
    ['docker://127.0.0.1:5000/demo:bookworm', { transport: 'registry', host: '127.0.0.1:5000', repository: 'demo', tag: 'bookworm' }],
    ['oci:/srv/img', { transport: 'layout', path: '/srv/img' }],
    ['oci:/srv/img:v1', { transport: 'layout', path: '/srv/img', tag: 'v1' }],
    ['oci:rel/dir:v1', { transport: 'layout', path: 'rel/dir', tag: 'v1' }],
    ['oci:/srv/a:b/img', { transport: 'layout', path: '/srv/a:b/img' }],
    ['oci:/srv/a:b/img:v1', { transport: 'layout', path: '/srv/a:b/img', tag: 'v1' }],
    ['oci:/srv/img:v1/', { transport: 'layout', path: '/srv/img:v1' }],
    ['oci:/srv/img@' + D, { transport: 'layout', path: '/srv/img', digest: D }],
    ['oci:/', { transport: 'layout', path: '/' }],
  ];
  for (const [text, want] of table) {
    it(`parses ${text}`, () => {
      const got = parseImageReference(text);
      assert.deepEqual(got, want);
      // Formatting and parsing again is the identity.
      assert.deepEqual(parseImageReference(formatImageReference(got)), got);
    });
  }

  it('targets the digest over the tag, and nothing for a bare layout', () => {
    assert.equal(referenceTarget(parseImageReference(`ghcr.io/o/r:t@${D}`)), D);
    assert.equal(referenceTarget(parseImageReference('alpine')), 'latest');
    assert.equal(referenceTarget(parseImageReference('oci:/x')), undefined);
  });

  const bad: Array<[string, RegExp]> = [
    ['', /non-empty/],
    ['Alpine', /lowercase/],
    ['localhost:5000/Upper', /lowercase/],
    ['alpine:', /not a valid tag/],
    ['alpine:bad/tag', /"alpine:bad" is not a valid registry host/],
    ['a.b_c/e', /not a valid registry host/],
    ['x/a..b', /not a valid repository component/],
    ['alpine@sha256:abc', /not a digest/],
    ['a b', /whitespace/],
    ['host:99999/x', /out of range/],
    ['-bad.host/x', /not a valid registry host/],
    ['oci:', /no layout directory/],
    ['oci::tag', /no layout directory/],
    ['http://x/y', /transport "http:\/\/" is not supported/],
    ['docker://', /names no repository/],
    ['x//y', /not a valid repository component/],
    ['host.io/', /no repository after the host|not a valid repository component/],
    [`a:${'t'.repeat(129)}`, /not a valid tag/],
  ];
  for (const [text, pattern] of bad) {
    it(`refuses ${JSON.stringify(text).slice(0, 40)}`, () => throwsCode(() => parseImageReference(text), 'EINVAL', pattern));
  }

  it('refuses digest algorithms it cannot verify with EUNSUPPORTED', () => {
    throwsCode(() => parseImageReference(`alpine@md5:${'a'.repeat(32)}`), 'EUNSUPPORTED', /md5/);
    throwsCode(() => parseDigest('sha256:ABC'), 'EINVAL');
    assert.deepEqual(parseDigest(`sha512:${'b'.repeat(128)}`), { algorithm: 'sha512', hex: 'b'.repeat(128) });
  });
});

describe('platforms', () => {
  const table: Array<[string, string]> = [
    ['linux/amd64', 'linux/amd64'],
    ['linux/x86_64', 'linux/amd64'],
    ['Linux/AMD64', 'linux/amd64'],
    ['linux/aarch64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64/v8'],
    ['linux/arm64/8', 'linux/arm64/v8'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/arm/v6', 'linux/arm/v6'],
    ['linux/i386', 'linux/386'],
    ['windows/amd64', 'windows/amd64'],
  ];
  for (const [text, want] of table) {
    it(`parses ${text}`, () => assert.equal(formatPlatform(parsePlatform(text)), want));
  }
  for (const text of ['linux', 'linux/', '/amd64', 'linux/amd64/v1/x', 'linux/am d64', '']) {
    it(`refuses ${JSON.stringify(text)}`, () => throwsCode(() => parsePlatform(text), 'EINVAL', /os\/arch/));
  }

  it('knows this host', () => {
    const host = hostPlatform();
    assert.equal(host.os, 'linux');
    const want = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386' }[process.arch as string];
    if (want) assert.equal(host.architecture, want);
    if (process.arch === 'arm64') assert.equal(host.variant, 'v8');
  });

  it('matches index entries: implied variants, optional variants', () => {
    const m = (want: string, have: { os: string; architecture: string; variant?: string }) => platformMatches(parsePlatform(want), have);
    assert.ok(m('linux/amd64', { os: 'linux', architecture: 'amd64' }));
    assert.ok(!m('linux/amd64', { os: 'linux', architecture: 'arm64' }));
    assert.ok(!m('linux/amd64', { os: 'windows', architecture: 'amd64' }));
    assert.ok(m('linux/arm64', { os: 'linux', architecture: 'arm64', variant: 'v8' }));
    assert.ok(m('linux/arm64/v8', { os: 'linux', architecture: 'arm64' }), 'arm64 without a variant is v8');
    assert.ok(m('linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }));
    assert.ok(!m('linux/arm/v6', { os: 'linux', architecture: 'arm', variant: 'v7' }));
    assert.ok(m('linux/arm/v7', { os: 'linux', architecture: 'arm' }), 'arm without a variant is v7');
    assert.ok(m('linux/arm', { os: 'linux', architecture: 'arm', variant: 'v6' }), 'no wanted variant: any');
    assert.ok(m('linux/amd64', { os: 'linux', architecture: 'x86_64' }), 'aliases on the index side too');
  });
});

describe('WWW-Authenticate', () => {
  it('parses Bearer with quoted parameters', () => {
    assert.deepEqual(
      parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'),
      [{ scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' } }],
    );
  });
  it('parses several challenges, escapes, spaces and unquoted values', () => {
    assert.deepEqual(parseWwwAuthenticate('Basic realm="a \\"quoted\\" realm", Bearer realm=https, error="invalid_token"'), [
      { scheme: 'basic', params: { realm: 'a "quoted" realm' } },
      { scheme: 'bearer', params: { realm: 'https', error: 'invalid_token' } },
    ]);
    assert.deepEqual(parseWwwAuthenticate('Basic'), [{ scheme: 'basic', params: {} }]);
    assert.deepEqual(parseWwwAuthenticate(''), []);
  });
});

describe('credentials', () => {
  const home = scratchDir('clip-home-');
  const cfg = (auths: unknown, extra: object = {}) => {
    const dir = scratchDir('clip-docker-config-');
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths, ...extra }));
    return dir;
  };
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  it('prefers the option, then the environment, then config.json', () => {
    const dir = cfg({ 'r.io': { auth: b64('cfg:pw') } });
    const option = { username: 'opt', password: 'o' };
    assert.equal(findCredentials('r.io', { credentials: option, env: { DOCKER_CONFIG: dir } })?.credentials.username, 'opt');
    const env = { DOCKER_CONFIG: dir, CLIP_REGISTRY_USERNAME: 'envu', CLIP_REGISTRY_PASSWORD: 'envp' };
    assert.deepEqual(findCredentials('r.io', { env })?.credentials, { username: 'envu', password: 'envp' });
    assert.deepEqual(findCredentials('r.io', { env: { DOCKER_CONFIG: dir } })?.credentials, { username: 'cfg', password: 'pw' });
    assert.equal(findCredentials('other.io', { env: { DOCKER_CONFIG: dir } }), undefined);
    throwsCode(() => findCredentials('r.io', { env: { CLIP_REGISTRY_USERNAME: 'x' } }), 'EINVAL', /both/);
  });

  it('matches host, https://host and https://host/v1/ keys, username/password fields, passwords with colons', () => {
    const dir = cfg({
      'https://a.io': { auth: b64('a:p:with:colons') },
      'https://b.io:5000/v1/': { username: 'b', password: 'q' },
      'https://index.docker.io/v1/': { auth: b64('hub:h') },
    });
    const env = { DOCKER_CONFIG: dir };
    assert.deepEqual(findCredentials('a.io', { env })?.credentials, { username: 'a', password: 'p:with:colons' });
    assert.deepEqual(findCredentials('b.io:5000', { env })?.credentials, { username: 'b', password: 'q' });
    assert.equal(findCredentials('b.io', { env }), undefined, 'the port is part of the host');
    assert.deepEqual(findCredentials('registry-1.docker.io', { env })?.credentials, { username: 'hub', password: 'h' });
  });

  it('reads ~/.docker/config.json when DOCKER_CONFIG is unset, and says no for credential helpers', () => {
    fs.mkdirSync(path.join(home, '.docker'), { recursive: true });
    fs.writeFileSync(path.join(home, '.docker', 'config.json'), JSON.stringify({ auths: { 'h.io': { auth: b64('u:p') } }, credHelpers: { 'g.io': 'gcr' } }));
    assert.deepEqual(findCredentials('h.io', { env: { HOME: home } })?.credentials, { username: 'u', password: 'p' });
    assert.equal(findCredentials('g.io', { env: { HOME: home } }), undefined);
  });

  it('refuses a malformed config.json with EINVAL', () => {
    const dir = scratchDir('clip-docker-config-');
    fs.writeFileSync(path.join(dir, 'config.json'), '{not json');
    throwsCode(() => findCredentials('r.io', { env: { DOCKER_CONFIG: dir } }), 'EINVAL', /not valid JSON/);
  });
});
