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
