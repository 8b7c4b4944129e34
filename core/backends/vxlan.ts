// vxlan: flannel.<VNI> (and flannel-v6.<VNI>), one neighbour, fdb entry and
// route per peer; DirectRouting routes peers on the same link directly.
import { macAddress } from '../mac.js';
import type { BackendSpec } from './spec.js';

export interface VxlanBackend {
  Type: 'vxlan';
  VNI: number;
  Port: number;
  GBP: boolean;
  DirectRouting: boolean;
  /** the MTU the device is sized from (flannel's vxlan MTU: the device gets MTU - 50); absent: the underlay's */
  MTU?: number;
  /** kernel source-address learning on the device (flannel's Learning, off by default) */
  Learning: boolean;
}

const MAX_VNI = 2 ** 24 - 1;
/** What VXLAN over IPv4 adds to every packet: outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14. */
export const VXLAN_OVERHEAD = 50;
/** The device must carry at least the 576-byte datagrams every IPv4 host accepts. */
const MIN_MTU = 576 + VXLAN_OVERHEAD;

export const vxlan: BackendSpec<VxlanBackend> = {
  type: 'vxlan',
  summary: 'VXLAN overlay: a vxlan device, a neighbour, fdb entry and route per peer',
  options: ['VNI', 'Port', 'GBP', 'DirectRouting', 'MTU', 'Learning'],
  windowsOnly: ['MacPrefix', 'Name'],
  nodeSecrets: [],
  controlSecrets: [],
  // flannel's BackendData.VtepMAC, and BackendV6Data's as VtepMACv6
  agentData: { VtepMAC: macAddress, VtepMACv6: macAddress },
  families: [4, 6],
  programsKernel: true,
  podTraffic: true,
  read: (f, ctx) => {
    // Go cannot tell 0 from absent: 0 has always meant the underlay's MTU.
    let mtu = f.integer('MTU');
    if (mtu === 0) mtu = undefined;
    if (mtu !== undefined && (mtu < MIN_MTU || mtu > 65535)) {
      ctx.errors.push(`${f.label('MTU')} ${mtu} is out of range: from ${MIN_MTU} to 65535 (the device gets MTU - ${VXLAN_OVERHEAD}, and IPv4 needs at least 576)`);
      mtu = undefined;
    }
    return {
      Type: 'vxlan',
      VNI: f.integerIn('VNI', 1, MAX_VNI) ?? 1,
      Port: f.integerIn('Port', 1, 65535) ?? 8472,
      GBP: f.boolean('GBP') ?? false,
      DirectRouting: f.boolean('DirectRouting') ?? false,
      ...(mtu !== undefined ? { MTU: mtu } : {}),
      Learning: f.boolean('Learning') ?? false,
    };
  },
};
