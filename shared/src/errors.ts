/**
 * Errors that cross a module or process boundary carry a stable `code`. Operators and tests match on
 * the code; the message says what to do about it.
 */
export const ErrorCode = {
  /** A command-line option or config key has a value the program cannot use. */
  BAD_OPTION: 'SR_BAD_OPTION',
  /** An identifier (VM name, disk id) does not match the allowed pattern; ids become file names. */
  BAD_ID: 'SR_BAD_ID',
  /** A disk image cannot be opened or has an unusable size. */
  BAD_DISK: 'SR_BAD_DISK',
  /** A journal record failed validation (magic, checksum, bounds, sequence). */
  JOURNAL_CORRUPT: 'SR_JOURNAL_CORRUPT',
  /** The data directory belongs to a different VM or disk layout than the one configured. */
  STATE_MISMATCH: 'SR_STATE_MISMATCH',
  /** A request addresses bytes outside the disk. */
  OUT_OF_RANGE: 'SR_OUT_OF_RANGE',
  /** Local storage refused a write (full disk, quota). */
  NO_SPACE: 'SR_NO_SPACE',
  /** Generic I/O failure from local storage. */
  IO: 'SR_IO',
  /** The component is shutting down and takes no new work. */
  SHUTTING_DOWN: 'SR_SHUTTING_DOWN',
  /** A protocol message is malformed or unexpected at this point of the conversation. */
  PROTOCOL: 'SR_PROTOCOL',
  /** A peer exceeded a named limit (frame size, batch size, records). */
  LIMIT: 'SR_LIMIT',
  /** A record's checksum does not match its content. */
  CHECKSUM: 'SR_CHECKSUM',
  /** Records do not follow on from the last one held (gap or overlap in LSNs). */
  SEQUENCE: 'SR_SEQUENCE',
  /** A record addresses a disk the VM does not have, or bytes past the end of one. */
  BOUNDS: 'SR_BOUNDS',
  /** The stream belongs to a generation other than the one expected. */
  GENERATION: 'SR_GENERATION',
  /** A peer's credential was refused. */
  AUTH: 'SR_AUTH',
  /** An unexpected failure inside a component (a bug, or an error it does not classify). */
  INTERNAL: 'SR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class SrError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SrError';
    this.code = code;
  }
}

export function isSrError(err: unknown, code?: ErrorCode): err is SrError {
  return err instanceof SrError && (code === undefined || err.code === code);
}

/** Node's errno-style code of a system error, if it has one. */
export function systemErrorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}
