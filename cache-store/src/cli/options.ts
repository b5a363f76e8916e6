import { ErrorCode, SrError } from '@site-recovery/shared';

/** An integer option of at least `min`; commander calls it with the raw text. */
export function intOption(name: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min)
      throw new SrError(ErrorCode.BAD_OPTION, `${name} "${value}" must be an integer of at least ${min}`);
    return n;
  };
}
