// The udp backend's data plane, in a worker thread of its own so that a
// burst of packets never holds up the agent's event loop (MQTT, reconciles,
// metrics). Both directions, one packet each way per turn:
//
//   out: TUN (flannel0) -> the peer whose subnet holds the destination, by UDP
//   in:  UDP from a current peer -> TUN, when the inner packet is for this node
//
// One thread rather than one per direction, as flannel's own udp proxy: the
// ACKs of a TCP stream flowing out come in on the thread that is awake
// anyway, instead of waking a second one for each (a thread per direction
// measured 8% slower on two cores, the wake-ups being what it adds).
//
// Plain JavaScript on purpose: Node 20 does not hand tsx's loader hooks on to
// worker threads, and registering them in each worker costs ~200 ms, which
// would count directly against how soon forwarding resumes after a restart.
// Its types are in worker.d.mts. It needs nothing but koffi.
//
// The wire format, and how a TUN packet (a TCP super-packet of up to ~64 KB,
// thanks to the TUN device's offloads) is cut into underlay-sized datagrams
// and put together again, is in wire.mjs. Both directions move the bytes
// without copying them: out reads the TUN packet with readv() straight into
// its chunks' places between the datagram headers and sends them all with
// one UDP GSO sendto(); in receives a UDP GRO batch with recvmsg() and hands
// a packet whose chunks came together to the TUN with one writev(). The peer
// and destination checks read the inner IPv4 header after the
// virtio_net_hdr.
//
// The loop is synchronous: non-blocking reads straight from the descriptors
// until both run dry, then poll() on both for at most 100 ms. Table updates and the
// stop request arrive as messages, picked up between packets whenever the
// main thread bumps a shared generation counter, so the loop never has to
// return to the event loop.
import { isMainThread, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import koffi from 'koffi';
import { HEADER, layout, readHeader, Reassembler, VERSION, VNET, writeHeader } from './wire.mjs';

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
  /** read / recvmsg failed other than "nothing to read" (e.g. the device was deleted) */
  readErrors: 8,
  /** in: a packet given up with chunks missing (lost or reordered too far on the underlay) */
  incomplete: 9,
});
export const COUNTER_SLOTS = 10;

const EAGAIN = 11;
const EINVAL = 22;
const EMSGSIZE = 90;
const SOL_UDP = 17;
const UDP_GRO = 104;
const MSG_TRUNC = 0x20;
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

/** Every pinned buffer, so that none is collected while the kernel may still be handed its address. */
const PINNED = [];

/**
 * A buffer whose address may go to the kernel, also inside an iovec or a
 * msghdr: V8 never moves an ArrayBuffer's memory once it is off its heap,
 * which an unpooled buffer of this size always is. Kept for the life of the
 * thread: an address written into another buffer is no reference the
 * garbage collector knows of (a collected iovec turned into EFAULT here).
 */
function pinned(size) {
  const buf = Buffer.allocUnsafeSlow(Math.max(size, 256));
  PINNED.push(buf);
  return { buf, addr: Number(koffi.address(buf)), u32: new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2) };
}

/** struct iovec number i of an array of them, written through its Uint32Array (little-endian, as on every 64-bit Linux twill runs on) */
function setIov(u32, i, addr, len) {
  u32[i * 4] = addr % 0x1_0000_0000;
  u32[i * 4 + 1] = Math.floor(addr / 0x1_0000_0000);
  u32[i * 4 + 2] = len;
  u32[i * 4 + 3] = 0;
}

function run(d) {
  // Pointers go to libc as plain addresses (uintptr_t) into pinned buffers:
  // no typed array is made per packet.
  const libc = koffi.load('libc.so.6');
  const readv = libc.func('long readv(int fd, uintptr_t iov, int n)');
  const write = libc.func('long write(int fd, uintptr_t buf, size_t n)');
  const writev = libc.func('long writev(int fd, uintptr_t iov, int n)');
  const recvmsg = libc.func('long recvmsg(int fd, uintptr_t msg, int flags)');
  const sendto = libc.func('long sendto(int fd, uintptr_t buf, size_t n, int flags, uintptr_t addr, uint32_t addrlen)');
  const poll = libc.func('int poll(void *fds, unsigned long nfds, int timeout)');

  const control = new Int32Array(d.control);
  const nOut = new Float64Array(d.counters.out);
  const nIn = new Float64Array(d.counters.in);
  let table = new ForwardingTable(d.table);
  // -1: drain the queue before the first packet, for messages posted while this worker was starting
  let gen = -1;
  const pfds = Buffer.alloc(16); // struct pollfd[2]: the TUN device and the socket
  pfds.writeInt32LE(d.tunFd, 0);
  pfds.writeInt16LE(POLLIN, 4);
  pfds.writeInt32LE(d.udpFd, 8);
  pfds.writeInt16LE(POLLIN, 12);
  const L = layout(d.segment);

  // out: chunk i of a TUN packet is read straight into its place behind
  // datagram header i, so that the datagrams lie at a stride of L.segment.
  const tx = pinned(L.maxChunks * L.segment);
  const txIov = pinned(L.maxChunks * 16);
  for (let i = 0; i < L.maxChunks; i++) setIov(txIov.u32, i, tx.addr + i * L.segment + HEADER, L.chunk);
  for (let i = 0; i < L.maxChunks; i++) writeHeader(tx.buf, i * L.segment, 0, i * L.chunk, 0);
  // one UDP GSO send carries up to L.perSend datagrams; without GSO, one each
  const perSend = d.gso ? L.perSend : 1;
  let seq = (Math.random() * 2 ** 32) >>> 0;
  const to = pinned(16); // struct sockaddr_in of the peer sent to last
  let toPeer;

  // in: one recvmsg() takes a whole GRO batch, up to 64 KB of datagrams of
  // one size (the UDP_GRO control message says which), from one sender.
  const RX = 65_536;
  const rx = pinned(RX);
  const from = pinned(16); // struct sockaddr_in of the sender
  const rxIov = pinned(16);
  setIov(rxIov.u32, 0, rx.addr, RX);
  const CTL = 64;
  const ctl = pinned(CTL);
  const msg = pinned(56); // struct msghdr
  setIov(msg.u32, 0, from.addr, 0); // msg_name; msg_namelen is set before each call
  setIov(msg.u32, 1, rxIov.addr, 1); // msg_iov, msg_iovlen
  setIov(msg.u32, 2, ctl.addr, 0); // msg_control; msg_controllen is set before each call
  const outIov = pinned((Math.ceil(RX / (HEADER + 1)) + 1) * 16);
  const reassembler = new Reassembler();
  // The reassembler's buffers are few and reused (each its own ArrayBuffer, at offset 0): their addresses are looked up once.
  const addressOf = new WeakMap();
  const addrOf = (view) => {
    const buf = view.buffer;
    let a = addressOf.get(buf);
    if (a === undefined) addressOf.set(buf, (a = Number(koffi.address(buf))));
    return a;
  };

  /** the checks on a whole packet for this node, before it goes to the TUN */
  const admissible = (peer, buf, at) => {
    if (buf[at + VNET] >> 4 !== 4) {
      nIn[COUNTERS.malformed]++;
      return false;
    }
    if (!table.isOwn(buf.readUInt32BE(at + VNET + 16))) {
      nIn[COUNTERS.notForUs]++;
      return false;
    }
    // A peer speaks for its own subnet only.
    if (table.lookup(buf.readUInt32BE(at + VNET + 12)) !== peer) {
      nIn[COUNTERS.spoofed]++;
      return false;
    }
    return true;
  };
  const delivered = (n, ok, total) => {
    if (!ok) n[COUNTERS.errors]++;
    else {
      n[COUNTERS.packets]++;
      n[COUNTERS.bytes] += total;
    }
  };

  const forwardOut = (len) => {
    if (len < VNET + 20 || tx.buf[HEADER + VNET] >> 4 !== 4) {
      nOut[COUNTERS.malformed]++;
      return;
    }
    const peer = table.lookup(tx.buf.readUInt32BE(HEADER + VNET + 16));
    if (!peer) {
      nOut[COUNTERS.noLease]++;
      return;
    }
    if (peer !== toPeer) {
      peer.addr.copy(to.buf, 0);
      toPeer = peer;
    }
    const chunks = Math.ceil(len / L.chunk);
    seq = (seq + 1) >>> 0;
    // version, flags and offset of each place were written once, below
    for (let i = 0, at = 4; i < chunks; i++, at += L.segment) {
      tx.buf.writeUInt32BE(seq, at);
      tx.buf.writeUInt32BE(len, at + 8);
    }
    const wire = (chunks - 1) * L.segment + HEADER + (len - (chunks - 1) * L.chunk);
    let ok = true;
    // The last send first: a 64 KB super-packet takes a send of 44 datagrams
    // and one of a single datagram, and the receiver, having kept that one
    // aside, writes the packet out straight from its read buffer when the 44 arrive.
    for (let first = Math.floor((chunks - 1) / perSend) * perSend; first >= 0; first -= perSend) {
      const start = first * L.segment;
      const end = first + perSend >= chunks ? wire : (first + perSend) * L.segment;
      if (sendto(d.udpFd, tx.addr + start, end - start, 0, to.addr, 16) >= 0) continue;
      const e = koffi.errno();
      // A route with a smaller MTU than the device's refuses a GSO send: one datagram at a time then.
      if (perSend > 1 && (e === EINVAL || e === EMSGSIZE)) {
        for (let at = start; at < end; at += L.segment) if (sendto(d.udpFd, tx.addr + at, Math.min(L.segment, end - at), 0, to.addr, 16) < 0) ok = false;
      } else ok = false;
    }
    delivered(nOut, ok, len);
  };

  const forwardIn = (len) => {
    const peer = table.bySource.get(from.buf.readUInt32BE(4));
    let seg = len;
    const ctlLen = msg.u32[10]; // msg_controllen, as the kernel left it
    for (let at = 0; at + 16 <= ctlLen; ) {
      const cmsgLen = ctl.buf.readUInt32LE(at);
      if (cmsgLen < 16) break;
      if (ctl.buf.readInt32LE(at + 8) === SOL_UDP && ctl.buf.readInt32LE(at + 12) === UDP_GRO && cmsgLen >= 20) seg = ctl.buf.readInt32LE(at + 16);
      at += (cmsgLen + 7) & ~7;
    }
    if (!peer) {
      nIn[COUNTERS.notPeer] += Math.ceil(len / seg);
      return;
    }
    if (msg.u32[12] & MSG_TRUNC) {
      nIn[COUNTERS.malformed]++;
      return;
    }
    for (let at = 0; at < len; ) {
      const size = Math.min(seg, len - at);
      const h = readHeader(rx.buf, at, size);
      if (!h) {
        nIn[COUNTERS.malformed]++;
        at += seg;
        continue;
      }
      if (h.offset === 0 && h.size >= VNET + 20) {
        // The usual case: the packet's chunks follow in this batch, in order...
        let count = 1;
        let got = h.size;
        let next = at + seg;
        // (the same checks as readHeader's, without making an object per datagram)
        while (got < h.total && next < len) {
          const size = Math.min(seg, len - next) - HEADER;
          if (size <= 0 || rx.buf[next] !== VERSION || rx.buf.readUInt32BE(next + 4) !== h.seq || rx.buf.readUInt32BE(next + 8) !== got || rx.buf.readUInt32BE(next + 12) !== h.total || got + size > h.total) break;
          got += size;
          count++;
          next += seg;
        }
        // ...or they end here and the rest, sent first, waits in the reassembler
        const rest = got < h.total ? reassembler.takeRest(peer.ip, h.seq, h.total, got) : undefined;
        if (got === h.total || rest) {
          if (admissible(peer, rx.buf, at + HEADER)) {
            if (count === 1 && !rest) delivered(nIn, write(d.tunFd, rx.addr + at + HEADER, h.size) >= 0, h.total);
            else {
              for (let i = 0; i < count; i++) {
                const o = at + i * seg;
                setIov(outIov.u32, i, rx.addr + o + HEADER, Math.min(seg, len - o) - HEADER);
              }
              if (rest) setIov(outIov.u32, count, addrOf(rest) + got, h.total - got);
              delivered(nIn, writev(d.tunFd, outIov.addr, rest ? count + 1 : count) >= 0, h.total);
            }
          }
          at = next;
          continue;
        }
      }
      const whole = reassembler.add(peer.ip, h, rx.buf, at + HEADER, at + size);
      nIn[COUNTERS.incomplete] = reassembler.incomplete;
      if (whole && admissible(peer, whole, 0)) delivered(nIn, write(d.tunFd, addrOf(whole), whole.length) >= 0, whole.length);
      at += seg;
    }
  };

  /** Whether a failed read only found nothing to read; anything else is counted, and waited out. */
  const nothingToRead = (n) => {
    const e = koffi.errno();
    if (e === EAGAIN || e === EINTR) return true;
    // A broken descriptor (the device deleted by hand): wait for the main
    // thread, which reattaches at its next reconcile.
    n[COUNTERS.readErrors]++;
    Atomics.wait(control, GEN, gen, 100);
    return false;
  };

  for (;;) {
    if (Atomics.load(control, GEN) !== gen) {
      gen = Atomics.load(control, GEN);
      let stop = false;
      for (let m = receiveMessageOnPort(parentPort); m; m = receiveMessageOnPort(parentPort)) {
        if (m.message.type === 'stop') stop = true;
        else {
          table = new ForwardingTable(m.message.table);
          toPeer = undefined;
        }
      }
      if (stop) return;
    }
    // One packet each way per turn, so that neither direction starves the other.
    let busy = false;
    let len = readv(d.tunFd, txIov.addr, L.maxChunks);
    if (len >= 0) {
      busy = true;
      forwardOut(len);
    } else if (!nothingToRead(nOut)) continue;
    msg.u32[2] = 16; // msg_namelen
    msg.u32[10] = CTL; // msg_controllen
    msg.u32[11] = 0;
    len = recvmsg(d.udpFd, msg.addr, 0);
    if (len >= 0) {
      busy = true;
      forwardIn(len);
    } else if (!nothingToRead(nIn)) continue;
    if (!busy) poll(pfds, 2, 100);
  }
}

if (!isMainThread && workerData?.udpFd !== undefined) run(workerData);
