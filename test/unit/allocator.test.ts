// The subnet a joining node gets (core/allocator.ts chooseSubnet), as a pure
// function: no store, no controller. test/unit/allocation.test.ts checks the
// same rules through the controller and the real SQLite store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseSubnet, CANDIDATES } from '../../core/allocator.js';
import { parseCidr } from '../../core/cidr.js';
import { parseNetConf, subnetRanges } from '../../core/config.js';
import { OutOfSubnetsError } from '../../core/errors.js';

const ip = (cidr: string): bigint => parseCidr(cidr, true)!.ip;
const sorted = (...cidrs: string[]): bigint[] => cidrs.map(ip).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
/** 10.10.0.0/16 in /24s: SubnetMin 10.10.1.0, SubnetMax 10.10.255.0 (flannel's defaults) */
const v4 = subnetRanges(parseNetConf({ Network: '10.10.0.0/16', Backend: { Type: 'alloc' } }, {})).v4!;
const first = () => 0;
const last = () => 0.999999;

test('a family the network leaves off gets no subnet', () => {
  assert.equal(chooseSubnet('n', undefined, [], '10.10.5.0/24', '10.10.6.0/24', first), null);
});

test('the subnet the node holds stays its own, even though the taken list names it', () => {
  assert.equal(chooseSubnet('n', v4, sorted('10.10.1.0/24', '10.10.7.0/24'), '10.10.7.0/24', undefined, first), '10.10.7.0/24');
});

test('the subnet held before a release comes back when it is free, and not when another node has it', () => {
  assert.equal(chooseSubnet('n', v4, sorted('10.10.1.0/24'), null, '10.10.9.0/24', first), '10.10.9.0/24');
  assert.equal(chooseSubnet('n', v4, sorted('10.10.1.0/24', '10.10.9.0/24'), null, '10.10.9.0/24', first), '10.10.2.0/24');
});

test('a held subnet that no longer fits the range (the network shrank) gives way to a free pick', () => {
  // 10.11.0.0/24 is outside the network; 10.10.4.0/25 has the wrong length.
  // A node that holds a lease asks with it, not with the one it held before.
  assert.equal(chooseSubnet('n', v4, sorted('10.11.0.0/24'), '10.11.0.0/24', '10.10.3.0/24', first), '10.10.1.0/24');
  assert.equal(chooseSubnet('n', v4, [], '10.10.4.0/25', undefined, first), '10.10.1.0/24');
});

test('a new node gets one of the first free subnets from SubnetMin, the random source deciding which', () => {
  const taken = sorted('10.10.1.0/24', '10.10.2.0/24', '10.10.4.0/24');
  assert.equal(chooseSubnet('n', v4, taken, undefined, undefined, first), '10.10.3.0/24');
  // the last of the first CANDIDATES free ones: 3, then 5 onwards
  const lastPick = chooseSubnet('n', v4, taken, undefined, undefined, last);
  assert.equal(lastPick, `10.10.${5 + CANDIDATES - 2}.0/24`);
  for (let i = 0; i < 50; i++) {
    const s = chooseSubnet('n', v4, taken, undefined, undefined, Math.random)!;
    assert.ok(!['10.10.1.0/24', '10.10.2.0/24', '10.10.4.0/24'].includes(s), `${s} is taken`);
  }
});

test('a full range is an OutOfSubnetsError naming the network and the range', () => {
  const small = subnetRanges(parseNetConf({ Network: '10.20.0.0/22', SubnetLen: 24, Backend: { Type: 'alloc' } }, {})).v4!;
  const taken = sorted('10.20.1.0/24', '10.20.2.0/24', '10.20.3.0/24');
  assert.throws(
    () => chooseSubnet('blue', small, taken, undefined, '10.20.2.0/24', first),
    (e: unknown) => e instanceof OutOfSubnetsError && /network blue has no free subnet: all 3 \/24 subnets from 10\.20\.1\.0 to 10\.20\.3\.0 are leased/.test(e.message),
  );
  // the node's own subnet counts as free for it
  assert.equal(chooseSubnet('blue', small, taken, '10.20.2.0/24', undefined, first), '10.20.2.0/24');
});

test('IPv6 follows the same rules', () => {
  const v6 = subnetRanges(parseNetConf({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10::/48', IPv6SubnetLen: 64, Backend: { Type: 'alloc' } }, {})).v6!;
  const firstV6 = chooseSubnet('n', v6, [], undefined, undefined, first)!;
  assert.equal(parseCidr(firstV6, true)!.prefix, 64);
  assert.equal(chooseSubnet('n', v6, [ip(firstV6)], firstV6, undefined, first), firstV6, 'held');
  assert.notEqual(chooseSubnet('n', v6, [ip(firstV6)], undefined, undefined, first), firstV6, 'taken by another');
});
