// External interface selection, as flannel does it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findExternal, type Interface } from '../../agent/iface.js';
import { FakeKernel } from '../fakes/kernel.js';

// The interfaces below stand for the kernel's; this one is never read.
const noKernel = new FakeKernel();

const ifaces: Interface[] = [
  { name: 'lo', mtu: 65536, addresses: ['127.0.0.1'], up: true },
  { name: 'eth0', mtu: 1500, ipv4: '192.0.2.10', ipv4Prefix: 24, addresses: ['192.0.2.10', '192.0.2.11', '2001:db8::10'], ipv6: '2001:db8::10', up: true },
  { name: 'ens5', mtu: 9001, ipv4: '10.1.2.3', ipv4Prefix: 16, addresses: ['10.1.2.3'], up: true },
];

test('--iface by name picks that interface and its first address', async () => {
  const e = await findExternal({ iface: ['ens5'] }, noKernel, ifaces);
  assert.equal(e.iface.name, 'ens5');
  assert.equal(e.publicIP, '10.1.2.3');
  assert.equal(e.iface.mtu, 9001);
});

test('--iface by address picks the interface holding it and publishes that address', async () => {
  const e = await findExternal({ iface: ['192.0.2.11'] }, noKernel, ifaces);
  assert.equal(e.iface.name, 'eth0');
  assert.equal(e.publicIP, '192.0.2.11');
});

test('--iface is repeatable: the first that exists wins', async () => {
  const e = await findExternal({ iface: ['wlan9', '10.1.2.3', 'eth0'] }, noKernel, ifaces);
  assert.equal(e.iface.name, 'ens5');
});

test('--iface-regex matches names, then addresses', async () => {
  assert.equal((await findExternal({ ifaceRegex: ['^en'] }, noKernel, ifaces)).iface.name, 'ens5');
  assert.equal((await findExternal({ ifaceRegex: ['^192\\.0\\.2\\.'] }, noKernel, ifaces)).iface.name, 'eth0');
});

test('--public-ip overrides the published address, not the interface', async () => {
  const e = await findExternal({ iface: ['eth0'], publicIP: '203.0.113.5' }, noKernel, ifaces);
  assert.equal(e.iface.name, 'eth0');
  assert.equal(e.publicIP, '203.0.113.5');
});

test('clear errors for an interface that does not exist and a bad regex', async () => {
  await assert.rejects(findExternal({ iface: ['wlan9', '198.51.100.1'] }, noKernel, ifaces), /none of --iface wlan9, 198\.51\.100\.1 is an interface name or address of this host/);
  await assert.rejects(findExternal({ ifaceRegex: ['('] }, noKernel, ifaces), /--iface-regex \( is not a valid regular expression/);
  await assert.rejects(findExternal({ ifaceRegex: ['^nothing$'] }, noKernel, ifaces), /no interface name or address matches --iface-regex \^nothing\$/);
});
