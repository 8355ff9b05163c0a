/**
 * The Prometheus export of a real mount: the demo image mounted over FUSE
 * with a LayerStore answering its misses (prefetch none, so reads go
 * through the tiers), files read through the mount, then /metrics scraped
 * over HTTP and the metrics file read. The text is checked by an oracle we
 * did not write, `promtool check metrics` (Debian's prometheus package),
 * and its values against the store's and the mount's own counters.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { log } from '../src/log';
import { MetricsExporter, parseListenAddress, renderPrometheus } from '../src/storage/prometheus';
import { LayerStore } from '../src/storage/store';
import { debianRootfs, rejectsWith } from './fixtures';
import { demoArchive, mountpoint, scratchDir, shAsync, withMount } from './mount-helpers';
import { freePort } from './registry-harness';

const CLI = path.resolve(__dirname, '../src/cli/main.js');

log.level = process.env.CLIP_LOG_LEVEL ?? 'error';

const PROMTOOL = '/usr/bin/promtool';

/** `promtool check metrics` on `text`: its complaints, or '' when it accepts it. */
function promtool(text: string): string {
  assert.ok(fs.existsSync(PROMTOOL), `${PROMTOOL} is missing: run "bash scripts/setup.sh" (apt-get install prometheus)`);
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return r.status === 0 ? '' : `exit ${r.status}: ${r.stdout}${r.stderr}`;
}

/** Samples of the exposition by "name{labels}" (labels as written). */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+) (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    out.set(m[1], m[2] === '+Inf' ? Infinity : Number(m[2]));
  }
  return out;
}

function histogramIsCumulative(values: Map<string, number>, tier: string): void {
  const buckets = [...values].filter(([k]) => k.startsWith(`clip_tier_read_duration_seconds_bucket{tier="${tier}",`));
  assert.ok(buckets.length > 2);
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], `${buckets[i][0]} < ${buckets[i - 1][0]}`);
  assert.equal(buckets.at(-1)![0], `clip_tier_read_duration_seconds_bucket{tier="${tier}",le="+Inf"}`);
  assert.equal(buckets.at(-1)![1], values.get(`clip_tier_read_duration_seconds_count{tier="${tier}"}`));
}

const FILES = ['etc/passwd', 'usr/bin/bash', 'etc/debian_version', 'usr/bin/ls'];

describe('the Prometheus metrics export', () => {
  test('a real mount, scraped over HTTP and written to a file: promtool accepts it and the numbers are the counters', async () => {
    const work = scratchDir('clip-prom-');
    const archive = await demoArchive();
    const cacheDir = path.join(work, 'cache');
    const file = path.join(work, 'metrics', 'clip.prom');
    fs.mkdirSync(path.dirname(file));
    const store = await LayerStore.open({ archive, cacheDir, prefetch: 'none' });
    try {
      await withMount({ archive, mountpoint: mountpoint(), cacheDir, readMiss: (l, off, len) => store.read(l.index, off, len) }, async (m) => {
        const exporter = await MetricsExporter.start({ listen: '127.0.0.1:0', file, intervalMs: 50, render: () => renderPrometheus({ store, mount: m }) });
        try {
          for (const f of FILES) {
            const got = await shAsync(`sha256sum '${path.join(m.mountpoint, f)}' | cut -c1-64`);
            const want = spawnSync('sha256sum', [path.join(debianRootfs(), f)], { encoding: 'utf8' }).stdout.slice(0, 64);
            assert.equal(got.trim(), want, f);
          }
          const res = await fetch(`http://127.0.0.1:${exporter.address!.port}/metrics`);
          assert.equal(res.status, 200);
          assert.match(res.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/);
          const text = await res.text();
          assert.equal(promtool(text), '', text);
          const v = samples(text);
          const s = store.stats();
          const ms = m.stats();
          // The mount is quiet now: the scrape and the counters agree.
          assert.equal(v.get('clip_fuse_reads_total'), ms.reads);
          assert.equal(v.get('clip_fuse_misses_total'), ms.misses);
          assert.ok(ms.misses > 0 && ms.readBytes > 0);
          assert.equal(v.get('clip_fuse_read_bytes_total'), ms.readBytes);
          assert.equal(v.get('clip_fuse_running'), 1);
          assert.equal(v.get('clip_tier_hits_total{tier="source"}'), s.tiers.source.hits);
          assert.ok(s.tiers.source.hits > 0);
          assert.equal(v.get('clip_tier_read_bytes_total{tier="source"}'), s.tiers.source.bytes);
          assert.equal(v.get('clip_tier_misses_total{tier="disk"}'), s.tiers.disk.misses);
          assert.equal(v.get('clip_source_wire_bytes_total{purpose="read"}'), s.sourceWireBytes.reads);
          assert.equal(v.get('clip_tier_read_duration_seconds_count{tier="source"}'), s.tiers.source.hits);
          assert.ok(v.get('clip_tier_read_duration_seconds_sum{tier="source"}')! > 0);
          for (const tier of ['memory', 'disk', 'source']) histogramIsCumulative(v, tier);
          assert.ok(!v.has('clip_redis_up'), 'no Redis configured');
          // Other paths and methods.
          assert.equal((await fetch(`http://127.0.0.1:${exporter.address!.port}/`)).status, 404);
          assert.equal((await fetch(`http://127.0.0.1:${exporter.address!.port}/metrics`, { method: 'POST' })).status, 405);
          // The file is rewritten at the interval: it catches up with a later read.
          await shAsync(`cat '${path.join(m.mountpoint, 'usr/bin/cat')}' >/dev/null`);
          const reads = m.stats().reads;
          const deadline = Date.now() + 5000;
          while (samples(fs.readFileSync(file, 'utf8')).get('clip_fuse_reads_total')! < reads) {
            assert.ok(Date.now() < deadline, 'the metrics file was not rewritten');
            await new Promise((r) => setTimeout(r, 20));
          }
          assert.equal(promtool(fs.readFileSync(file, 'utf8')), '');
        } finally {
          await exporter.close();
        }
        // close() wrote the final numbers, and no temporary file is left.
        assert.equal(samples(fs.readFileSync(file, 'utf8')).get('clip_fuse_reads_total'), m.stats().reads);
        assert.deepEqual(fs.readdirSync(path.dirname(file)), ['clip.prom']);
      });
    } finally {
      await store.close();
    }
  });

  test('a store with Redis exports clip_redis_up; an empty store exports zeros that promtool accepts', async () => {
    const work = scratchDir('clip-prom-empty-');
    const store = await LayerStore.open({ archive: await demoArchive(), cacheDir: path.join(work, 'c'), redis: 'redis://127.0.0.1:1' });
    try {
      const text = renderPrometheus({ store });
      assert.equal(promtool(text), '', text);
      const v = samples(text);
      assert.equal(v.get('clip_redis_up'), 1, 'not yet tried: usable');
      assert.equal(v.get('clip_tier_hits_total{tier="redis"}'), 0);
      assert.equal(v.get('clip_tier_read_duration_seconds_bucket{tier="redis",le="+Inf"}'), 0);
      assert.equal(renderPrometheus({}), '');
    } finally {
      await store.close();
    }
  });

  test('clip-native mount --metrics-addr --metrics-file: scraped while mounted, the file holds the last numbers after umount', async () => {
    const work = scratchDir('clip-prom-cli-');
    const archive = await demoArchive();
    const mp = mountpoint();
    const file = path.join(work, 'clip.prom');
    const port = await freePort();
    const cli = (...args: string[]) => shAsync([process.execPath, CLI, ...args].map((a) => `'${a}'`).join(' '));
    await cli('mount', archive, mp, '--cache-dir', path.join(work, 'cache'), '--prefetch', 'none', '--metrics-addr', `127.0.0.1:${port}`, '--metrics-file', file, '--metrics-interval', '100');
    try {
      const passwd = await shAsync(`cat '${mp}/etc/passwd'`);
      assert.equal(passwd, fs.readFileSync(path.join(debianRootfs(), 'etc/passwd'), 'utf8'));
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.equal(promtool(text), '', text);
      const v = samples(text);
      assert.ok(v.get('clip_fuse_misses_total')! >= 1, text);
      assert.ok(v.get('clip_tier_hits_total{tier="source"}')! >= 1, text);
      assert.equal(v.get('clip_fuse_running'), 1);
    } finally {
      await cli('umount', mp);
    }
    // The mount process writes the file a last time as it stops.
    const deadline = Date.now() + 10_000;
    while (!fs.existsSync(file) || samples(fs.readFileSync(file, 'utf8')).get('clip_fuse_running') !== 0) {
      assert.ok(Date.now() < deadline, 'the metrics file never showed the stopped mount');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(promtool(fs.readFileSync(file, 'utf8')), '');
    assert.ok(samples(fs.readFileSync(file, 'utf8')).get('clip_fuse_reads_total')! >= 1);
    // A bad address is refused before anything is mounted.
    await assert.rejects(cli('mount', archive, mp, '--metrics-addr', 'nonsense'), /HOST:PORT/);
  });

  test('bad addresses and a taken port fail with one clear error', async () => {
    for (const bad of ['9100', 'localhost', '127.0.0.1:99999', '::1:9100', '']) {
      assert.throws(() => parseListenAddress(bad), (e: Error & { code?: string }) => e.code === 'EINVAL', bad);
    }
    assert.deepEqual(parseListenAddress('[::1]:9100'), { host: '::1', port: 9100 });
    await rejectsWith(MetricsExporter.start({ render: () => '' }), 'EINVAL');
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      await rejectsWith(MetricsExporter.start({ listen: `127.0.0.1:${port}`, render: () => '' }), 'EIO', /cannot serve metrics/);
    } finally {
      taken.close();
    }
    await rejectsWith(MetricsExporter.start({ file: '/nonexistent-dir/x.prom', render: () => '' }), 'EIO', /metrics file/);
  });
});
