// One direction of the udp backend's data plane, in a worker thread of its
// own so that a burst of packets never holds up the agent's event loop (MQTT,
// reconciles, metrics):
//
//   out: TUN (flannel0) -> the peer whose subnet holds the destination, by UDP
//   in:  UDP from a current peer -> TUN, when the inner packet is for this node
//
// Plain JavaScript on purpose: Node 20 does not hand tsx's loader hooks on to
// worker threads, and registering them in each worker costs ~200 ms, which
// would count directly against how soon forwarding resumes after a restart.
// Its types are in worker.d.mts. It needs nothing but koffi.
//
// Wire format (twill's own; flannel's udp backend is not interoperable anyway):
// each UDP datagram carries one packet exactly as the TUN hands it over, a
// 10-byte struct virtio_net_hdr (flags, gso_type, hdr_len, gso_size,
// csum_start, csum_offset; little-endian) followed by the IPv4 packet. With
// GSO the packet is a TCP super-packet of up to ~64 KB: the sender's kernel
// IP-fragments the datagram on the underlay, the receiver's kernel reassembles
// it, and writing it to the TUN as is lets the receiver's kernel segment it.
// The peer and destination checks read the inner IPv4 header after the
// virtio_net_hdr.
//
// The loop is synchronous: non-blocking reads straight from the descriptor
// until it runs dry, then poll() for at most 100 ms. Table updates and the
// stop request arrive as messages, picked up between packets whenever the
// main thread bumps a shared generation counter, so the loop never has to
// return to the event loop.
import { isMainThread, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import koffi from 'koffi';

export const GEN = 0;
/** Slots of the shared counters array; the main thread exports them as metrics. */
export const COUNTERS = Object.freeze({
  packets: 0,
  bytes: 1,
  /** out: destination in no lease */
  noLease: 2,
  /** in: sender is not a current peer */
  notPeer: 3,
  /** in: inner destination outside this node's subnet */
  notForUs: 4,
  /** in: inner source outside the sending peer's subnet */
  spoofed: 5,
  /** not an IPv4 packet (the TUN device also sees IPv6 neighbour discovery) */
  malformed: 6,
  /** sendto / write refused (full socket buffer, peer unreachable) */
  errors: 7,
  /** read / recvfrom failed other than "nothing to read" (e.g. the device was deleted) */
  readErrors: 8,
});
export const COUNTER_SLOTS = 9;

/** sizeof(struct virtio_net_hdr), before every packet on the TUN and on the wire */
const VNET = 10;
const MAX_PACKET = 65_535 + VNET;
const EAGAIN = 11;
const EINTR = 4;
const POLLIN = 1;
const AF_INET = 2;

export const maskOf = (prefix) => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

function sockaddrIn(ip, port) {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.writeUInt32BE(ip >>> 0, 4);
  return b;
}

/** Which peer owns a destination, and which public IPs are peers at all. */
export class ForwardingTable {
  constructor(m) {
    /** one map per prefix length in use, longest first (leases share SubnetLen, so usually one) */
    this.bySubnet = [...new Set(m.peers.map((p) => p.prefix))].sort((a, b) => b - a).map((prefix) => ({ mask: maskOf(prefix), peers: new Map() }));
    this.bySource = new Map();
    this.ownMask = m.own ? maskOf(m.own.prefix) : 0;
    this.ownBase = m.own ? (m.own.base & this.ownMask) >>> 0 : -1;
    for (const p of m.peers) {
      const peer = this.bySource.get(p.ip) ?? { ip: p.ip, addr: sockaddrIn(p.ip, m.port) };
      this.bySource.set(p.ip, peer);
      const mask = maskOf(p.prefix);
      this.bySubnet.find((s) => s.mask === mask)?.peers.set((p.base & mask) >>> 0, peer);
    }
  }

  lookup(dst) {
    for (const s of this.bySubnet) {
      const p = s.peers.get((dst & s.mask) >>> 0);
      if (p) return p;
    }
    return undefined;
  }

  isOwn(dst) {
    return ((dst & this.ownMask) >>> 0) === this.ownBase;
  }
}

function run(d) {
  const libc = koffi.load('libc.so.6');
  const read = libc.func('long read(int fd, void *buf, size_t n)');
  const write = libc.func('long write(int fd, const void *buf, size_t n)');
  const recvfrom = libc.func('long recvfrom(int fd, void *buf, size_t n, int flags, void *addr, void *addrlen)');
  const sendto = libc.func('long sendto(int fd, const void *buf, size_t n, int flags, const void *addr, uint32_t addrlen)');
  const poll = libc.func('int poll(void *fds, unsigned long nfds, int timeout)');

  const control = new Int32Array(d.control);
  const n = new Float64Array(d.counters);
  let table = new ForwardingTable(d.table);
  // -1: drain the queue before the first packet, for messages posted while this worker was starting
  let gen = -1;
  const buf = Buffer.alloc(MAX_PACKET);
  const out = d.direction === 'out';
  const readFd = out ? d.tunFd : d.udpFd;
  const pfd = Buffer.alloc(8); // struct pollfd
  pfd.writeInt32LE(readFd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  const from = Buffer.alloc(16); // struct sockaddr_in of the sender
  const fromLen = Buffer.alloc(4);

  for (;;) {
    if (Atomics.load(control, GEN) !== gen) {
      gen = Atomics.load(control, GEN);
      let stop = false;
      for (let m = receiveMessageOnPort(parentPort); m; m = receiveMessageOnPort(parentPort)) {
        if (m.message.type === 'stop') stop = true;
        else table = new ForwardingTable(m.message.table);
      }
      if (stop) return;
    }

    let len;
    if (out) {
      len = read(readFd, buf, MAX_PACKET);
    } else {
      fromLen.writeUInt32LE(16, 0);
      len = recvfrom(readFd, buf, MAX_PACKET, 0, from, fromLen);
    }
    if (len < 0) {
      const e = koffi.errno();
      if (e === EAGAIN) poll(pfd, 1, 100);
      else if (e !== EINTR) {
        // The descriptor is broken (its device deleted by hand): count it and
        // wait for the main thread, which reattaches at its next reconcile.
        n[COUNTERS.readErrors]++;
        Atomics.wait(control, GEN, gen, 100);
      }
      continue;
    }
    if (out) {
      if (len < VNET + 20 || buf[VNET] >> 4 !== 4) {
        n[COUNTERS.malformed]++;
        continue;
      }
      const peer = table.lookup(buf.readUInt32BE(VNET + 16));
      if (!peer) {
        n[COUNTERS.noLease]++;
        continue;
      }
      if (sendto(d.udpFd, buf, len, 0, peer.addr, 16) < 0) {
        n[COUNTERS.errors]++;
        continue;
      }
    } else {
      const peer = table.bySource.get(from.readUInt32BE(4));
      if (!peer) {
        n[COUNTERS.notPeer]++;
        continue;
      }
      if (len < VNET + 20 || buf[VNET] >> 4 !== 4) {
        n[COUNTERS.malformed]++;
        continue;
      }
      if (!table.isOwn(buf.readUInt32BE(VNET + 16))) {
        n[COUNTERS.notForUs]++;
        continue;
      }
      // A peer speaks for its own subnet only.
      if (table.lookup(buf.readUInt32BE(VNET + 12)) !== peer) {
        n[COUNTERS.spoofed]++;
        continue;
      }
      if (write(d.tunFd, buf, len) < 0) {
        n[COUNTERS.errors]++;
        continue;
      }
    }
    n[COUNTERS.packets]++;
    n[COUNTERS.bytes] += len;
  }
}

if (!isMainThread && workerData?.direction) run(workerData);
