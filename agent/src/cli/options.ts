import fs from 'node:fs';
import {
  ErrorCode,
  SrError,
  formatSize,
  parseDuration,
  parseHostPort,
  parseSize,
  readSecretFile,
} from '@site-recovery/shared';
import type { DiskConfig } from '../agent-config.js';
import { MIN_SEGMENTS_PER_CAP, MIN_SEGMENT_BYTES, segmentBytesFor } from '../journal/file-journal-options.js';
import {
  DEFAULT_HOLD_TIMEOUT_MS,
  MAX_HOLD_TIMEOUT_MS,
  MIN_HOLD_TIMEOUT_MS,
  checkGroupConfig,
  parsePeers,
  type GroupConfig,
} from '../group/group-config.js';

/** Parses ID=PATH. */
export function parseDisk(value: string): DiskConfig {
  const eq = value.indexOf('=');
  if (eq <= 0 || eq === value.length - 1) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--disk "${value}" is not ID=PATH (for example --disk os=/var/lib/vm/os.img)`,
    );
  }
  return { id: value.slice(0, eq), path: value.slice(eq + 1) };
}

/** Keys a config file may hold; the same as the long options. */
interface AgentFileConfig {
  vm?: string;
  disk?: string[];
  nbd?: string;
  dataDir?: string;
  /** A number of bytes, or a size string as on the command line ("4M"). */
  journalSegmentBytes?: number;
  cacheStore?: string;
  /** A path, never the token itself: a config file is read by more people than its owner. */
  tokenFile?: string;
  tlsCa?: string;
}

const FILE_KEYS = new Set(['vm', 'disk', 'nbd', 'dataDir', 'journalSegmentBytes', 'cacheStore', 'tokenFile', 'tlsCa']);

export function readConfigFile(file: string): AgentFileConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SrError(ErrorCode.BAD_OPTION, `cannot read config file ${file}: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new SrError(ErrorCode.BAD_OPTION, `config file ${file} must hold a JSON object`);
  }
  for (const k of Object.keys(raw)) {
    if (!FILE_KEYS.has(k))
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `config file ${file}: unknown key "${k}" (known: ${[...FILE_KEYS].join(', ')})`,
      );
  }
  const c = raw as Record<string, unknown>;
  const str = (k: string): string | undefined => {
    if (c[k] === undefined) return undefined;
    if (typeof c[k] !== 'string')
      throw new SrError(ErrorCode.BAD_OPTION, `config file ${file}: "${k}" must be a string`);
    return c[k];
  };
  const disk = c['disk'];
  if (disk !== undefined && (!Array.isArray(disk) || !disk.every((d) => typeof d === 'string'))) {
    throw new SrError(ErrorCode.BAD_OPTION, `config file ${file}: "disk" must be an array of "ID=PATH" strings`);
  }
  const seg = fileSize(file, 'journalSegmentBytes', c['journalSegmentBytes'], MIN_SEGMENT_BYTES);
  const out: AgentFileConfig = {};
  const vm = str('vm');
  const nbd = str('nbd');
  const dataDir = str('dataDir');
  const cacheStore = str('cacheStore');
  const tokenFile = str('tokenFile');
  const tlsCa = str('tlsCa');
  if (cacheStore !== undefined) out.cacheStore = cacheStore;
  if (tokenFile !== undefined) out.tokenFile = tokenFile;
  if (tlsCa !== undefined) out.tlsCa = tlsCa;
  if (vm !== undefined) out.vm = vm;
  if (nbd !== undefined) out.nbd = nbd;
  if (dataDir !== undefined) out.dataDir = dataDir;
  if (disk !== undefined) out.disk = disk;
  if (seg !== undefined) out.journalSegmentBytes = seg;
  return out;
}

function fileSize(file: string, key: string, value: unknown, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n =
    typeof value === 'string'
      ? parseSize(value, `config file ${file}: "${key}"`)
      : typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
        ? value
        : undefined;
  if (n === undefined || n < min)
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `config file ${file}: "${key}" must be a size of at least ${formatSize(min)}, a number of bytes or a string such as "${formatSize(min)}"`,
    );
  return n;
}

/**
 * The journal's cap and segment size. Without a segment size (on the command line or in the config
 * file) it follows the cap (segmentBytesFor: an eighth, 1 MiB to 64 MiB), so a small cap works on its
 * own; a segment size given must fit MIN_SEGMENTS_PER_CAP times in the cap, or it is refused with what
 * to change.
 */
export function journalSizes(
  maxBytes: number,
  segmentBytes: number | undefined,
): { maxBytes: number; segmentBytes: number } {
  if (segmentBytes === undefined) return { maxBytes, segmentBytes: segmentBytesFor(maxBytes) };
  if (maxBytes < MIN_SEGMENTS_PER_CAP * segmentBytes) {
    const fits = Math.floor(maxBytes / segmentBytes);
    const largest = Math.floor(maxBytes / MIN_SEGMENTS_PER_CAP / MIN_SEGMENT_BYTES) * MIN_SEGMENT_BYTES;
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `--journal-max-bytes ${formatSize(maxBytes)} holds only ${fits} segment${fits === 1 ? '' : 's'} of ` +
        `${formatSize(segmentBytes)} (--journal-segment-bytes); space comes back only in whole segments, so it must ` +
        `hold at least ${MIN_SEGMENTS_PER_CAP}: raise --journal-max-bytes to ${formatSize(MIN_SEGMENTS_PER_CAP * segmentBytes)}` +
        (largest >= MIN_SEGMENT_BYTES ? `, lower --journal-segment-bytes to ${formatSize(largest)}` : '') +
        `, or leave --journal-segment-bytes out (it then follows the cap: ${formatSize(segmentBytesFor(maxBytes))})`,
    );
  }
  return { maxBytes, segmentBytes };
}

/** The replication-group options of sr-agent, as given. */
export interface GroupOptions {
  readonly group?: string;
  readonly groupSecretFile?: string;
  readonly groupListen?: string;
  readonly peers?: string;
  /** Absent: {@link DEFAULT_HOLD_TIMEOUT_MS}. */
  readonly groupHoldTimeout?: string;
}

/**
 * Checks the group options together, before anything starts, and reads the group secret; undefined
 * without --group. Every refusal is SR_BAD_OPTION (SR_BAD_ID for a bad name) and says what to give.
 */
export function groupFromOptions(vm: string, o: GroupOptions, replicates: boolean): GroupConfig | undefined {
  const bad = (message: string): SrError => new SrError(ErrorCode.BAD_OPTION, message);
  if (o.group === undefined) {
    const stray = (
      [
        ['groupSecretFile', '--group-secret-file'],
        ['groupListen', '--group-listen'],
        ['peers', '--peers'],
        ['groupHoldTimeout', '--group-hold-timeout'],
      ] as const
    ).find(([k]) => o[k] !== undefined);
    if (stray !== undefined) throw bad(`${stray[1]} needs --group NAME: it configures this VM's replication group`);
    return undefined;
  }
  if (o.groupSecretFile === undefined)
    throw bad(
      '--group needs --group-secret-file FILE, the secret every member of the group holds ' +
        '(make one with sr secret new --out FILE and copy it to each member, mode 600)',
    );
  if (o.peers === undefined)
    throw bad(`--group needs --peers VM=HOST:PORT,... naming every member, this VM (${vm}) included`);
  if (!replicates) throw bad('--group needs replication: group points are cut by the processor; add --cache-store URL');
  const hold =
    o.groupHoldTimeout !== undefined
      ? parseDuration(o.groupHoldTimeout, '--group-hold-timeout')
      : DEFAULT_HOLD_TIMEOUT_MS;
  if (hold < MIN_HOLD_TIMEOUT_MS || hold > MAX_HOLD_TIMEOUT_MS)
    throw bad(
      `--group-hold-timeout ${o.groupHoldTimeout} is outside ${MIN_HOLD_TIMEOUT_MS}ms-${MAX_HOLD_TIMEOUT_MS}ms: ` +
        "the VM's writes wait this long at most for each group point; longer stalls the applications",
    );
  const config: GroupConfig = {
    name: o.group,
    secret: Buffer.alloc(0),
    peers: parsePeers(o.peers),
    ...(o.groupListen !== undefined ? { listen: parseHostPort(o.groupListen, '--group-listen') } : {}),
    holdTimeoutMs: hold,
  };
  // The secret last: a mistake in the other options is named without touching the credential.
  checkGroupConfig(vm, { ...config, secret: Buffer.alloc(1) });
  return { ...config, secret: readSecretFile(o.groupSecretFile) };
}
