import { ErrorCode, SrError } from '@site-recovery/shared';

/** Checks a ws:// or wss:// URL. */
export function parseWsUrl(value: string, option: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new SrError(ErrorCode.BAD_OPTION, `${option} "${value}" is not a URL (for example ws://10.0.0.5:7400/)`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new SrError(ErrorCode.BAD_OPTION, `${option} "${value}" must start with ws:// or wss://`);
  }
  return url.toString();
}
