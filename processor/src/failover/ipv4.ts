import { ErrorCode, SrError } from '@site-recovery/shared';

// IPv4 addresses and CIDR blocks as unsigned 32-bit numbers, with messages that name the option to fix.

export interface Cidr {
  /** Network address as an unsigned 32-bit number. */
  readonly network: number;
  readonly prefix: number;
  /** Last address of the block (the broadcast address). */
  readonly broadcast: number;
}

const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4 = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

/** Parses dotted-quad IPv4 (no leading zeros: "010" would be octal to some tools) into an unsigned 32-bit number. */
export function parseIpv4(text: string, what: string): number {
  const m = IPV4.exec(text);
  if (m === null)
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `${what} "${text}" is not an IPv4 address like 10.0.1.4${text === '' ? '' : ' (or "dhcp" where a dynamic address is meant)'}`,
    );
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses `a.b.c.d/len`; host bits must be zero, as Azure requires of a subnet's address prefix. */
export function parseCidr(text: string, what: string): Cidr {
  const slash = text.indexOf('/');
  const prefixText = slash < 0 ? '' : text.slice(slash + 1);
  if (slash < 0 || !/^(3[0-2]|[12]?\d)$/.test(prefixText)) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `${what} "${text}" is not a CIDR block like 10.0.1.0/24 (an IPv4 address, "/", a prefix length 0-32)`,
    );
  }
  const address = parseIpv4(text.slice(0, slash), `${what} address`);
  const prefix = Number(prefixText);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (address & mask) >>> 0;
  if (network !== address) {
    throw new SrError(
      ErrorCode.BAD_OPTION,
      `${what} "${text}" has host bits set; the block starting there is ${formatIpv4(network)}/${prefix}`,
    );
  }
  return { network, prefix, broadcast: (network | (~mask >>> 0)) >>> 0 };
}

export function contains(c: Cidr, ip: number): boolean {
  return ip >= c.network && ip <= c.broadcast;
}
