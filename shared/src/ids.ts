import { ErrorCode, SrError } from './errors.js';

/**
 * VM names and disk ids end up in file names and URLs, so they are checked once, where they enter,
 * against one pattern: letters, digits, dot, dash and underscore, starting with a letter or digit.
 */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkId(kind: string, value: string): string {
  if (!ID_PATTERN.test(value)) {
    throw new SrError(
      ErrorCode.BAD_ID,
      `${kind} "${value}" is not a valid id: use 1-64 letters, digits, '.', '-' or '_', starting with a letter or digit`,
    );
  }
  return value;
}
