// Types of worker.mjs, the udp data plane's worker thread (plain JavaScript
// so that it starts without tsx; see there).

export type Direction = 'out' | 'in';

/** The forwarding table as the main thread sends it (structured-cloneable). */
export interface TableMessage {
  /** this node's subnet: base address and prefix length */
  own?: { base: number; prefix: number };
  /** the UDP port every node listens on (the network's Backend.Port) */
  port: number;
  peers: { base: number; prefix: number; ip: number }[];
}

export interface WorkerData {
  tunFd: number;
  udpFd: number;
  /** Int32Array view: [GEN] bumped by the main thread when a message waits */
  control: SharedArrayBuffer;
  /** per direction, a Float64Array view indexed by COUNTERS */
  counters: Record<Direction, SharedArrayBuffer>;
  table: TableMessage;
  /** UDP payload bytes per datagram on the underlay (the underlay MTU less 28) */
  segment: number;
  /** whether the socket does UDP GSO (UDP_SEGMENT set to `segment`) */
  gso: boolean;
}

export type WorkerMessage = { type: 'table'; table: TableMessage } | { type: 'stop' };

export const GEN: 0;
export const COUNTERS: {
  readonly packets: 0;
  readonly bytes: 1;
  readonly noLease: 2;
  readonly notPeer: 3;
  readonly notForUs: 4;
  readonly spoofed: 5;
  readonly malformed: 6;
  readonly errors: 7;
  readonly readErrors: 8;
  readonly incomplete: 9;
};
export const COUNTER_SLOTS: 10;

export function maskOf(prefix: number): number;

export interface Peer {
  ip: number;
  addr: Buffer;
}

export class ForwardingTable {
  constructor(m: TableMessage);
  readonly bySource: Map<number, Peer>;
  lookup(dst: number): Peer | undefined;
  isOwn(dst: number): boolean;
}
