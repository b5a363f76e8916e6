/**
 * Segment files of the agent's journal and the cache-store's log are named by the first LSN they hold,
 * as 16 lower-case hex digits and an extension, so that names sort as LSNs do. Each component's
 * names.ts builds its names with these two functions.
 */
const LSN_HEX = /^([0-9a-f]{16})$/;

/** `<16 hex digits of lsn>.<ext>`. */
export function lsnFileName(lsn: number, ext: string): string {
  return `${lsn.toString(16).padStart(16, '0')}.${ext}`;
}

/** The LSN named by `<16 hex digits>.<ext>`, or `undefined` for any other name (and for LSN 0). */
export function parseLsnFileName(name: string, ext: string): number | undefined {
  const suffix = `.${ext}`;
  if (!name.endsWith(suffix)) return undefined;
  const m = LSN_HEX.exec(name.slice(0, -suffix.length));
  if (m === null) return undefined;
  const lsn = Number.parseInt(m[1]!, 16);
  return Number.isSafeInteger(lsn) && lsn > 0 ? lsn : undefined;
}
