// The udp backend's wire format (twill's own; flannel's udp backend is not
// interoperable with any other implementation anyway).
//
// What the TUN device hands over is a 10-byte struct virtio_net_hdr followed
// by an IPv4 packet; with TCP segmentation offload that packet is a TCP
// super-packet of up to ~64 KB. Sent as one UDP datagram it would be IP-
// fragmented on the underlay, which many networks drop, and which costs a
// reassembly in the receiver's kernel. Instead the sender cuts it into
// chunks that each fill one underlay-MTU-sized datagram, every one led by a
// 16-byte header:
//
//   0  u8  version (1)
//   1  u8  flags (0)
//   2  u16 reserved (0)
//   4  u32 seq     per sender, one per TUN packet (random start, so that a
//                  restarted sender never completes a stale partial packet)
//   8  u32 offset  of this chunk in the TUN packet
//   12 u32 total   length of the TUN packet (virtio_net_hdr included)
//
// All chunks but the last are equally long, so the datagrams line up at a
// fixed stride and the kernel can send them with one UDP GSO call
// (UDP_SEGMENT) and the receiver's kernel can hand them back in one UDP GRO
// read (UDP_GRO). The receiver writes a packet whose chunks arrived together
// and in order straight from its read buffer; chunks that arrive apart (no
// GRO on the path, reordering) are put together by the Reassembler. A packet
// that loses a chunk is dropped whole, as a lost IP fragment would drop it.
//
// Plain JavaScript for the worker threads' sake (see worker.mjs).

export const HEADER = 16;
export const VERSION = 1;
/** sizeof(struct virtio_net_hdr), before every packet on the TUN */
export const VNET = 10;
/** the largest TUN packet: an IPv4 packet of 65,535 bytes and its virtio_net_hdr */
export const MAX_PACKET = 65_535 + VNET;
/** the largest UDP payload in one send (65,535 - IPv4 header - UDP header) */
export const MAX_UDP_PAYLOAD = 65_507;
/** UDP_MAX_SEGMENTS of older kernels (newer ones allow 128) */
export const MAX_GSO_SEGMENTS = 64;

/**
 * The layout for datagrams of `segment` bytes of UDP payload: `chunk` packet
 * bytes per datagram, and how many datagrams one GSO send may carry.
 */
export function layout(segment) {
  if (!Number.isInteger(segment) || segment < HEADER + VNET + 20) throw new RangeError(`udp segment size ${segment} is too small to carry a header and an IPv4 header`);
  const chunk = segment - HEADER;
  const perSend = Math.max(1, Math.min(MAX_GSO_SEGMENTS, Math.floor(MAX_UDP_PAYLOAD / segment)));
  return {
    segment,
    chunk,
    perSend,
    /** the most chunks a TUN packet may need (a 64 KB super-packet takes two GSO sends: 44 and 1) */
    maxChunks: Math.ceil(MAX_PACKET / chunk),
  };
}

export function writeHeader(buf, at, seq, offset, total) {
  buf[at] = VERSION;
  buf[at + 1] = 0;
  buf.writeUInt16BE(0, at + 2);
  buf.writeUInt32BE(seq >>> 0, at + 4);
  buf.writeUInt32BE(offset, at + 8);
  buf.writeUInt32BE(total, at + 12);
}

/**
 * The header of the datagram of `len` bytes at `at`, or undefined when it is
 * not one of ours or does not add up (a chunk past the packet's end, a packet
 * longer than any TUN packet).
 */
export function readHeader(buf, at, len) {
  if (len <= HEADER || buf[at] !== VERSION) return undefined;
  const seq = buf.readUInt32BE(at + 4);
  const offset = buf.readUInt32BE(at + 8);
  const total = buf.readUInt32BE(at + 12);
  const size = len - HEADER;
  if (total > MAX_PACKET || total < VNET + 20 || offset + size > total) return undefined;
  return { seq, offset, total, size };
}

/**
 * Puts together packets whose chunks arrived in separate reads, per sender.
 * A few packets may be in flight at once; when another one starts, the
 * oldest incomplete one is given up (and counted).
 */
export class Reassembler {
  constructor(slots = 16) {
    this.slots = slots;
    /** key "<sender>:<seq>" -> { buf, total, got, offsets } in arrival order */
    this.pending = new Map();
    this.spare = [];
    /** packets given up with chunks missing */
    this.incomplete = 0;
  }

  /**
   * Adds one chunk (`data[start, end)`, at `h.offset` of packet `h.seq` from
   * `sender`). Returns the whole packet once its last chunk is in; the buffer
   * is the Reassembler's and is reused after the next call.
   */
  add(sender, h, data, start, end) {
    const key = `${sender}:${h.seq}`;
    let p = this.pending.get(key);
    if (p && p.total !== h.total) {
      // the same seq with another length: not the same packet (a sender restarted)
      this.release(key, p, true);
      p = undefined;
    }
    if (!p) {
      if (this.pending.size >= this.slots) {
        const [oldKey, old] = this.pending.entries().next().value;
        this.release(oldKey, old, true);
      }
      const buf = this.spare.pop() ?? Buffer.allocUnsafeSlow(MAX_PACKET);
      p = { buf, view: buf.subarray(0, h.total), total: h.total, got: 0, offsets: new Set() };
      this.pending.set(key, p);
    }
    if (p.offsets.has(h.offset)) return undefined; // a duplicate datagram
    p.offsets.add(h.offset);
    data.copy(p.buf, h.offset, start, end);
    p.got += end - start;
    if (p.got < p.total) return undefined;
    this.release(key, p, false);
    if (p.got !== p.total) {
      // overlapping chunks: not a sender of ours
      this.incomplete++;
      return undefined;
    }
    return p.view;
  }

  /**
   * The buffer of packet `seq` from `sender` if what has arrived of it is
   * exactly its bytes from `from` to the end (so that the caller holds the
   * rest): the bytes are at the same offsets as in the packet. The buffer is
   * the Reassembler's, valid until the next call.
   */
  takeRest(sender, seq, total, from) {
    const key = `${sender}:${seq}`;
    const p = this.pending.get(key);
    if (!p || p.total !== total || p.got !== total - from) return undefined;
    for (const o of p.offsets) if (o < from) return undefined;
    this.release(key, p, false);
    return p.buf;
  }

  release(key, p, givenUp) {
    this.pending.delete(key);
    this.spare.push(p.buf);
    if (givenUp) this.incomplete++;
  }
}
