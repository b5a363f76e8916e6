import fs from 'node:fs';
import { ErrorCode, SrError } from '@site-recovery/shared';

/**
 * Writes a secret or a token to a new file only its owner can read (0600), durably. An existing file
 * is never replaced: it may be the secret every token in use was signed with.
 */
export function writeCredentialFile(file: string, text: string, what: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx', 0o600);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EEXIST')
      throw new SrError(
        ErrorCode.BAD_OPTION,
        `${file} exists; not overwriting it with a new ${what} (remove it first)`,
      );
    throw new SrError(ErrorCode.BAD_OPTION, `cannot create the ${what} file ${file}: ${e.message}`);
  }
  try {
    // The umask may only take bits away; this makes sure none beyond the owner's are left.
    fs.fchmodSync(fd, 0o600);
    fs.writeSync(fd, text.endsWith('\n') ? text : text + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
