#!/usr/bin/env node
/**
 * The clip-native command line. Each command is a thin shell over the
 * library: parse flags, call it, print. Failures print one sentence on
 * stderr and exit with the stable code of their ClipError (see EXIT_CODES).
 */
import { Command, Option } from 'commander';
import { ClipError, EXIT_CODES, isClipError } from '../errors';
import { log } from '../log';
import { losslessArgv } from '../path-bytes';
import { registerImageCommands } from './image';
import { registerLayerCommands } from './layer';
import { registerMountCommands } from './mount';
import { registerStorageCommands } from './storage';

function main(argv: string[]): void {
  const program = new Command();
  program
    .name('clip-native')
    .description('Start containers from OCI images without pulling them: index once, read lazily.')
    .version(require('../../../package.json').version as string)
    .addOption(new Option('--log-level <level>', 'pino log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']))
    .hook('preAction', (cmd) => {
      const level = cmd.opts().logLevel as string | undefined;
      if (level) log.level = level;
    })
    .showHelpAfterError()
    .exitOverride((err) => {
      // commander's own usage errors (unknown option, missing argument).
      process.exit(err.exitCode === 0 ? 0 : EXIT_CODES.EINVAL);
    });

  registerLayerCommands(program);
  registerImageCommands(program);
  registerMountCommands(program);
  registerStorageCommands(program);

  program.parseAsync(argv).catch((e: unknown) => {
    if (isClipError(e)) {
      process.stderr.write(`clip-native: ${e.message} (${e.code})\n`);
      process.exitCode = EXIT_CODES[e.code] ?? 1;
    } else {
      const err = e as NodeJS.ErrnoException;
      if (err && err.code === 'ENOENT') {
        process.stderr.write(`clip-native: ${err.message} (ENOENT)\n`);
        process.exitCode = EXIT_CODES.ENOENT;
        return;
      }
      log.error({ err: e }, 'unexpected failure');
      process.stderr.write(`clip-native: unexpected failure: ${String(e)}\n`);
      process.exitCode = 1;
    }
  });
}

export { ClipError };
main(losslessArgv());
