import { describe, expect, it } from 'vitest';
import { formatIpv4, parseCidr, parseIpv4 } from '../../src/failover/ipv4.js';

describe('IPv4 helpers', () => {
  it.each([
    ['0.0.0.0/0', '0.0.0.0', '255.255.255.255'],
    ['10.0.0.0/8', '10.0.0.0', '10.255.255.255'],
    ['192.168.1.128/25', '192.168.1.128', '192.168.1.255'],
    ['10.1.2.3/32', '10.1.2.3', '10.1.2.3'],
  ])('%s spans %s - %s', (cidr, first, last) => {
    const c = parseCidr(cidr, 'x');
    expect(formatIpv4(c.network)).toBe(first);
    expect(formatIpv4(c.broadcast)).toBe(last);
  });

  it('round-trips addresses across the unsigned range', () => {
    for (const ip of ['0.0.0.0', '1.2.3.4', '128.0.0.1', '255.255.255.255'])
      expect(formatIpv4(parseIpv4(ip, 'x'))).toBe(ip);
  });
});
