/**
 * The command line as a user runs it: help, a layer summary, a file read
 * through the checkpoints, and one-sentence errors with stable exit codes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { EXIT_CODES } from '../src';
import { debianLayer, debianRootfs, tempDir } from './fixtures';

const cli = path.resolve(__dirname, '../src/cli/main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { maxBuffer: 1 << 28 });

describe('clip-native CLI', () => {
  it('prints help and its version', () => {
    const help = run('--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout.toString(), /Usage: clip-native/);
    assert.match(help.stdout.toString(), /layer/);
    assert.equal(run('--version').stdout.toString().trim(), require('../../package.json').version);
  });

  it('indexes a layer and prints a JSON summary', () => {
    const dir = tempDir();
    const ckpt = path.join(dir, 'layer.ckpt');
    const r = run('layer', 'index', debianLayer(), '--json', '--checkpoints', ckpt);
    assert.equal(r.status, 0, r.stderr.toString());
    const summary = JSON.parse(r.stdout.toString());
    assert.equal(summary.format, 'gzip');
    assert.ok(summary.entries > 1000);
    assert.equal(fs.statSync(ckpt).size, summary.checkpointBytes);
    const read = run('layer', 'read', debianLayer(), '--checkpoints', ckpt, '--offset', '1000000', '--length', '4096');
    assert.equal(read.status, 0, read.stderr.toString());
    assert.equal(read.stdout.length, 4096);
  });

  it('cats a file out of the layer byte-exact', () => {
    const r = run('layer', 'cat', debianLayer(), 'usr/bin/bash');
    assert.equal(r.status, 0, r.stderr.toString());
    assert.ok(r.stdout.equals(fs.readFileSync(path.join(debianRootfs(), 'usr/bin/bash'))));
  });

  it('fails with one sentence and a stable exit code', () => {
    const dir = tempDir();
    const garbage = path.join(dir, 'garbage.bin');
    fs.writeFileSync(garbage, Buffer.alloc(4096, 'x'));
    const r = run('layer', 'index', garbage);
    assert.equal(r.status, EXIT_CODES.ECORRUPT);
    assert.match(r.stderr.toString(), /^clip-native: .*neither gzip nor tar.*\(ECORRUPT\)\n$/);
    const missing = run('layer', 'cat', debianLayer(), 'no/such/file');
    assert.equal(missing.status, EXIT_CODES.ENOENT);
    assert.equal(run('layer', 'index').status, EXIT_CODES.EINVAL);
  });
});
