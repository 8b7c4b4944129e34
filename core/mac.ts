// The MAC addresses twill writes and reads: a VTEP's, which an agent makes up
// once and publishes in its lease (vxlan's VtepMAC and VtepMACv6). One rule
// for both ends: the agent makes a locally administered unicast address, and
// the controller accepts only a unicast one in the same lower-case form.

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Why value is not a unicast MAC address in lower case (0e:2a:00:11:22:33), or undefined when it is one. */
export function macAddress(value: unknown): string | undefined {
  if (typeof value !== 'string' || !MAC.test(value)) return 'must be a MAC address like 0e:2a:00:11:22:33';
  // the I/G bit (the first octet's lowest): set, the address names a group
  if (parseInt(value.slice(0, 2), 16) & 1) return 'must be a unicast MAC address (the first octet even)';
  return undefined;
}

/**
 * A locally administered unicast MAC from six random bytes: the I/G bit
 * cleared (unicast) and the U/L bit set (not from a vendor's range, so it
 * cannot collide with a real card's).
 */
export function localUnicastMac(random: Uint8Array): string {
  if (random.length !== 6) throw new Error(`a MAC address takes 6 bytes, not ${random.length}`);
  const b = [...random];
  b[0] = ((b[0] as number) & 0xfe) | 0x02;
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
