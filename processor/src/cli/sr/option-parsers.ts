import { Option } from 'commander';
import { parseDuration } from '@site-recovery/shared';
import { DHCP } from '../../failover/target-resources.js';
import { parseIpv4 } from '../../failover/ipv4.js';

/** `--flag <duration>` taking 30s, 15m, 24h, 15d or 1h30m; the action receives milliseconds. */
export function durationOption(flag: string, description: string): Option {
  return new Option(`${flag} <duration>`, description).argParser((v: string) => parseDuration(v, flag));
}

/** `--flag <ip>` taking a dotted-quad IPv4 address or `dhcp`, checked before anything is sent. */
export function ipOption(flag: string, description: string): Option {
  return new Option(`${flag} <ip>`, description).argParser((v: string) => (v === DHCP ? v : (parseIpv4(v, flag), v)));
}
