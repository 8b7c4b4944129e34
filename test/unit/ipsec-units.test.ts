// The ipsec backend's pure parts: the vici wire format and the reading of
// `ip xfrm policy`. No root, no charon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMessage, encodeMessage, type ViciMessage } from '../../agent/ipsec/vici.js';
import { parsePolicies } from '../../agent/ipsec/xfrm.js';
import { classifySas } from '../../agent/backends/ipsec.js';

test('vici messages survive encoding and decoding: keys, lists, nested sections', () => {
  const msg: ViciMessage = {
    'twill-h2-0123abcd': {
      version: '2',
      local_addrs: ['192.168.1.10'],
      proposals: ['aes128gcm16-prfsha256-ecp256', 'default'],
      local: { auth: 'psk', id: '192.168.1.10' },
      children: { 'twill-h2-0123abcd': { local_ts: ['10.1.1.0/24'], mode: 'tunnel' } },
    },
    empty: [],
  };
  assert.deepEqual(decodeMessage(Buffer.concat(encodeMessage(msg))), msg);
});

test('vici: a value is length-prefixed on two bytes, a name on one', () => {
  const b = Buffer.concat(encodeMessage({ k: 'v' }));
  assert.deepEqual([...b], [3, 1, 0x6b, 0, 1, 0x76]);
  assert.throws(() => decodeMessage(Buffer.from([3, 1, 0x6b, 0, 9, 0x76])), /truncated/);
  assert.throws(() => encodeMessage({ ['x'.repeat(300)]: 'v' }), /name too long/);
});

test('ip xfrm policy output: selectors, direction, action, priority and tunnel ends; socket policies left out', () => {
  const text = `src 10.250.1.0/24 dst 10.250.2.0/24 
	dir out priority 375423 ptype main 
	tmpl src 192.168.100.10 dst 192.168.100.11
		proto esp spi 0xc8edd608 reqid 1 mode tunnel
src 10.250.0.0/16 dst 10.250.0.0/16 
	dir out action block priority 2000000 ptype main 
src 0.0.0.0/0 dst 0.0.0.0/0 
	socket in priority 0 ptype main 
`;
  assert.deepEqual(parsePolicies(text), [
    { src: '10.250.1.0/24', dst: '10.250.2.0/24', dir: 'out', action: 'allow', priority: 375423, tmpl: { src: '192.168.100.10', dst: '192.168.100.11' } },
    { src: '10.250.0.0/16', dst: '10.250.0.0/16', dir: 'out', action: 'block', priority: 2000000 },
  ]);
});

test('charon\'s SAs: one being rekeyed still carries traffic, one being set up is left to finish, so a restarted agent never starts a second', () => {
  const child = (state: string) => ({ 'child-sas': { c: { state } } });
  const sas = classifySas([
    { 'twill-a-1': { state: 'ESTABLISHED', ...child('INSTALLED') } },
    // an IKE rekey under way: the old IKE_SA still holds the installed CHILD_SA
    { 'twill-b-1': { state: 'REKEYING', ...child('INSTALLED') } },
    // a CHILD_SA rekey: the old one REKEYING, the new one INSTALLING
    { 'twill-c-1': { state: 'ESTABLISHED', 'child-sas': { old: { state: 'REKEYING' }, new: { state: 'INSTALLING' } } } },
    { 'twill-d-1': { state: 'CONNECTING' } },
    // the old IKE_SA of a finished rekey beside the new one, in either order
    { 'twill-e-1': { state: 'DELETING' } },
    { 'twill-e-1': { state: 'ESTABLISHED', ...child('INSTALLED') } },
    { 'twill-f-1': { state: 'ESTABLISHED', ...child('INSTALLED') } },
    { 'twill-f-1': { state: 'REKEYED' } },
  ]);
  assert.deepEqual(Object.fromEntries(sas), {
    'twill-a-1': 'established', 'twill-b-1': 'established', 'twill-c-1': 'established',
    'twill-d-1': 'busy', 'twill-e-1': 'established', 'twill-f-1': 'established',
  });
  // a connection charon holds nothing for is the only one the agent initiates
  assert.equal(sas.has('twill-g-1'), false);
});
