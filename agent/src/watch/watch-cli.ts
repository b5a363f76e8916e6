import { Option, type Command } from 'commander';
import { ErrorCode, SrError, formatDuration, formatSize, parseDuration, sizeOption } from '@site-recovery/shared';
import {
  DEFAULT_WATCH_BLOCK_BYTES,
  DEFAULT_WATCH_DEBOUNCE_MS,
  DEFAULT_WATCH_MAX_DELAY_MS,
  DEFAULT_WATCH_RESCAN_INTERVAL_MS,
  MAX_WATCH_BLOCK_BYTES,
  MIN_WATCH_BLOCK_BYTES,
  watchLimits,
  type WatchOptions,
} from './watch-config.js';

/** Options of sr-agent that only a fronting (NBD) agent has a use for, by their long flag. */
const NBD_ONLY = [
  '--nbd',
  '--nbd-allow-remote',
  '--max-nbd-connections',
  '--checkpoint-interval',
  '--app-consistent-frequency',
  '--pre-snapshot',
  '--post-snapshot',
  '--group',
  '--group-secret-file',
  '--peers',
  '--group-listen',
  '--group-hold-timeout',
];

const WATCH_ONLY = ['--watch-block-size', '--watch-debounce', '--watch-max-delay', '--watch-rescan-interval'];

/** `--mode` and the options of watch mode. */
export function addWatchOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--mode <mode>',
        'nbd: serve the disks over NBD, so every write passes through the agent; watch: watch image files another process writes and ship what changed by checksum (no NBD listener; recovery points only at clean scans, see the README)',
      )
        .default('nbd')
        .argParser((v: string) => {
          if (v !== 'nbd' && v !== 'watch')
            throw new SrError(ErrorCode.BAD_OPTION, `--mode "${v}" is not a mode: write nbd or watch`);
          return v;
        }),
    )
    .addOption(
      new Option(
        '--watch-block-size <size>',
        `watch mode: bytes per compared block, a power of two from ${formatSize(MIN_WATCH_BLOCK_BYTES)} to ${formatSize(MAX_WATCH_BLOCK_BYTES)}; a changed block is sent whole`,
      )
        .default(DEFAULT_WATCH_BLOCK_BYTES, formatSize(DEFAULT_WATCH_BLOCK_BYTES))
        .argParser(sizeOption('--watch-block-size', MIN_WATCH_BLOCK_BYTES, MAX_WATCH_BLOCK_BYTES)),
    )
    .option(
      '--watch-debounce <duration>',
      'watch mode: quiet time after a change before a scan; a scan is clean (a point may be cut at it) only if the images were unmodified this long before it and throughout it',
      formatDuration(DEFAULT_WATCH_DEBOUNCE_MS),
    )
    .option(
      '--watch-max-delay <duration>',
      'watch mode: longest a change waits for a scan while changes keep coming (such a scan overlaps the writer and is not clean)',
      formatDuration(DEFAULT_WATCH_MAX_DELAY_MS),
    )
    .option(
      '--watch-rescan-interval <duration>',
      'watch mode: scan at least this often even without change events (writes through a shared mmap raise none)',
      formatDuration(DEFAULT_WATCH_RESCAN_INTERVAL_MS),
    );
}

/**
 * Refuses options the chosen mode has no use for (SR_BAD_OPTION naming the option), so a command line
 * meant for the other mode fails at once instead of being half obeyed.
 */
export function checkModeOptions(cmd: Command, mode: string): void {
  const given = (flags: readonly string[]): string | undefined =>
    flags.find((flag) => {
      const opt = cmd.options.find((o) => o.long === flag);
      return opt !== undefined && cmd.getOptionValueSource(opt.attributeName()) === 'cli';
    });
  if (mode === 'watch') {
    const extra = given(NBD_ONLY);
    if (extra !== undefined)
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `${extra} has no use with --mode watch: the agent opens no NBD listener, orders no write and takes part in no group or app-consistent point`,
      );
    return;
  }
  const extra = given(WATCH_ONLY);
  if (extra !== undefined) throw new SrError(ErrorCode.BAD_OPTION, `${extra} needs --mode watch`);
}

/** The watch options from sr-agent's parsed options, checked (SR_BAD_OPTION) before anything starts. */
export function watchOptionsFrom(o: {
  readonly watchBlockSize: number;
  readonly watchDebounce: string;
  readonly watchMaxDelay: string;
  readonly watchRescanInterval: string;
}): WatchOptions {
  const atLeast = (ms: number, option: string, min: number): number => {
    if (ms < min) throw new SrError(ErrorCode.BAD_OPTION, `${option} must be at least ${formatDuration(min)}`);
    return ms;
  };
  const options = {
    blockBytes: o.watchBlockSize,
    debounceMs: atLeast(parseDuration(o.watchDebounce, '--watch-debounce'), '--watch-debounce', 10),
    maxDelayMs: atLeast(parseDuration(o.watchMaxDelay, '--watch-max-delay'), '--watch-max-delay', 10),
    rescanIntervalMs: atLeast(
      parseDuration(o.watchRescanInterval, '--watch-rescan-interval'),
      '--watch-rescan-interval',
      1000,
    ),
  };
  watchLimits(options);
  return options;
}
