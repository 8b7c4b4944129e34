// Backend.Overlay of the cloud backends (aws-vpc, gce, ali-vpc), as a user
// writes it in net-conf.json: read with vxlan's own rules, only vxlan taken,
// DirectRouting refused with the reason, unknown keys warned about as the
// Backend's own are; and what the members' agents may publish for it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { agentDataProblems } from '../../core/backends/index.js';
import { explainOverlay, overlayOf } from '../../core/backends/overlay.js';
import { readNetConf } from '../../core/config.js';
import { ConfigError } from '../../core/errors.js';

const CREDS = { AccessKeyID: 'id', AccessKeySecret: 'secret' };
const CLOUDS = ['aws-vpc', 'gce', 'ali-vpc'] as const;

function read(backend: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return readNetConf(JSON.stringify({ Network: '10.60.0.0/16', ...extra, Backend: backend }), {});
}

function errors(backend: Record<string, unknown>): string[] {
  try {
    read(backend);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.errors;
  }
  assert.fail('the config was accepted');
}

const cloud = (type: (typeof CLOUDS)[number], more: Record<string, unknown>) => ({ Type: type, ...(type === 'ali-vpc' ? CREDS : {}), ...more });

describe('Backend.Overlay', () => {
  for (const type of CLOUDS) {
    test(`${type}: {"Type": "vxlan"} gets vxlan's defaults (but DirectRouting), and the cloud's own options are unchanged`, () => {
      const r = read(cloud(type, { RouteLimit: 2, Overlay: { Type: 'vxlan' } }));
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(overlayOf(r.config.Backend), { Type: 'vxlan', VNI: 1, Port: 8472, GBP: false, Learning: false });
      assert.equal((r.config.Backend as { RouteLimit?: number }).RouteLimit, 2);
    });
  }

  test('without it a cloud network is as before: no Overlay key in the effective config', () => {
    const r = read({ Type: 'aws-vpc' });
    assert.deepEqual(r.config.Backend, { Type: 'aws-vpc', RouteTableID: [] });
    assert.equal(overlayOf(r.config.Backend), undefined);
  });

  test("vxlan's options are read by vxlan's rules, labelled Backend.Overlay.*; Type is case-insensitive as Backend.Type is", () => {
    const r = read({ Type: 'gce', Overlay: { Type: 'VXLAN', VNI: 4096, Port: 4789, MTU: 1460, GBP: true, Learning: true } });
    assert.deepEqual(overlayOf(r.config.Backend), { Type: 'vxlan', VNI: 4096, Port: 4789, GBP: true, MTU: 1460, Learning: true });
    assert.deepEqual(errors({ Type: 'gce', Overlay: { Type: 'vxlan', VNI: 0, MTU: 100, Port: 'x' } }), [
      'Backend.Overlay.MTU 100 is out of range: from 626 to 65535 (the device gets MTU - 50, and IPv4 needs at least 576)',
      'Backend.Overlay.VNI 0 is out of range: it must be from 1 to 16777215',
      'Backend.Overlay.Port "x" is a string: expected an integer',
    ]);
  });

  test('DirectRouting is refused with the reason: the VPC is the direct path', () => {
    const e = errors({ Type: 'aws-vpc', Overlay: { Type: 'vxlan', DirectRouting: true } });
    assert.deepEqual(e, ['Backend.Overlay.DirectRouting is not taken: on a cloud network the VPC is the direct path (a member whose cloud route is in place is reached through it); leave it out']);
  });

  test('any other Type is refused, naming Backend.Overlay.Type and what is accepted; a missing Type and a non-object too', () => {
    assert.deepEqual(errors({ Type: 'aws-vpc', Overlay: { Type: 'wireguard' } }), [
      'Backend.Overlay.Type "wireguard" is not accepted: the overlay of a cloud network is vxlan ("Type": "vxlan", with vxlan\'s options VNI, Port, GBP, MTU, Learning)',
    ]);
    assert.deepEqual(errors({ Type: 'aws-vpc', Overlay: { VNI: 2 } }), ['Backend.Overlay.Type is missing: the overlay of a cloud network is vxlan, e.g. "Overlay": {"Type": "vxlan"}']);
    assert.deepEqual(errors({ Type: 'aws-vpc', Overlay: 'vxlan' }), ['Backend.Overlay "vxlan" is a string: expected an object such as {"Type": "vxlan"}']);
  });

  test('an IPv6-only network cannot have one: the overlay carries IPv4 only, as the VPC routes do', () => {
    try {
      readNetConf(JSON.stringify({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00::/48', Backend: { Type: 'gce', Overlay: { Type: 'vxlan' } } }), {});
      assert.fail('accepted');
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      assert.deepEqual(e.errors, ['Backend.Overlay carries IPv4 only, as the VPC routes do, and this network does not enable IPv4: set EnableIPv4 (and Network), or leave the overlay out']);
    }
  });

  test('unknown keys are warned about with the closest name, as the Backend\'s own are, and ignored', () => {
    const r = read(cloud('ali-vpc', { Overlay: { Type: 'vxlan', Prot: 4789, Name: 'x' } }));
    assert.deepEqual(r.warnings, [
      'Backend.Overlay.Prot: unknown option of the vxlan overlay, ignored as flannel does; did you mean Port?',
      'Backend.Overlay.Name: unknown option of the vxlan overlay, ignored as flannel does',
    ]);
    assert.equal(overlayOf(r.config.Backend)?.Port, 8472);
  });

  test('a backend that is not a cloud\'s has no Overlay: the key is an unknown option there', () => {
    const r = read({ Type: 'vxlan', Overlay: { Type: 'vxlan' } });
    assert.deepEqual(r.warnings, ['Backend.Overlay: unknown option of vxlan, ignored as flannel does']);
    assert.equal(overlayOf(r.config.Backend), undefined);
  });

  test('the effective config reads back the same (what the controller publishes is what the agents read)', () => {
    const first = read({ Type: 'aws-vpc', RouteTableID: 'rtb-1', Overlay: { Type: 'vxlan', VNI: 7, MTU: 9001 } }).config;
    assert.deepEqual(readNetConf(JSON.stringify(first), {}).config, first);
  });
});

describe("the members' agents publish their VtepMAC on a cloud network", () => {
  for (const type of CLOUDS) {
    test(`${type}: a unicast VtepMAC is taken; a bad one, VtepMACv6 (the overlay carries IPv4 only) and anything else are refused`, () => {
      assert.deepEqual(agentDataProblems(type, { VtepMAC: '0e:2a:00:11:22:33' }), []);
      assert.deepEqual(agentDataProblems(type, { VtepMAC: '0f:2a:00:11:22:33' }), ['backendData.VtepMAC "0f:2a:00:11:22:33" must be a unicast MAC address (the first octet even)']);
      assert.deepEqual(agentDataProblems(type, { VtepMAC: 'nope' }), ['backendData.VtepMAC "nope" must be a MAC address like 0e:2a:00:11:22:33']);
      assert.deepEqual(agentDataProblems(type, { VtepMACv6: '0e:2a:00:11:22:33' }), [`backendData.VtepMACv6 is not published by ${type} agents (they publish VtepMAC)`]);
    });
  }
});

describe('config check explains the overlay', () => {
  test('a twill extension flannel lacks, what it does and asks of the hosts; IPv4 only said when IPv6 is on', () => {
    const conf = read({ Type: 'aws-vpc', Overlay: { Type: 'vxlan', VNI: 7 } }).config;
    const notes = explainOverlay(conf);
    assert.match(notes[0] ?? '', /^Backend\.Overlay is a twill extension flannel lacks \(flanneld ignores it\): .* over vxlan VNI 7, UDP port 8472/);
    assert.ok(notes.some((n) => /every member runs the twill agent/.test(n)), notes.join('\n'));
    assert.ok(notes.some((n) => /rp_filter=1/.test(n)), notes.join('\n'));
    assert.ok(!notes.some((n) => /IPv4 only/.test(n)));
    const dual = read({ Type: 'gce', Overlay: { Type: 'vxlan' } }, { EnableIPv6: true, IPv6Network: 'fd00::/48' }).config;
    assert.ok(explainOverlay(dual).some((n) => /carries IPv4 only, as the VPC routes do/.test(n)));
    assert.deepEqual(explainOverlay(read({ Type: 'gce' }).config), []);
  });
});
