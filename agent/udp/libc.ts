// The libc calls that set up the udp backend's descriptors, which Node cannot
// make: ioctl(TUNSETIFF) to attach to a TUN device, and a raw non-blocking
// UDP socket whose descriptor the worker threads (worker.mjs) read and write
// directly, without libuv's thread pool in the way. Bound with koffi, a
// maintained FFI with prebuilt binaries (~150 ns per call here).
import koffi from 'koffi';
import { TwillError } from '../../core/errors.js';

const libc = koffi.load('libc.so.6');

export const c = {
  open: libc.func('int open(const char *path, int flags, ...)'),
  close: libc.func('int close(int fd)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long request, ...)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
  strerror: libc.func('const char *strerror(int errnum)'),
};

export const errno = (): number => koffi.errno();

export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const AF_INET = 2;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_RCVBUFFORCE = 33;
export const SO_SNDBUFFORCE = 32;

// <linux/if_tun.h>
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const TUNSETOFFLOAD = 0x400454d0;
const TUNSETVNETHDRSZ = 0x400454d8;
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const TUN_F_TSO6 = 0x04;
const TUN_F_TSO_ECN = 0x08;
/** sizeof(struct virtio_net_hdr): what precedes every packet read from or written to the TUN */
export const VNET_HDR_LEN = 10;
const IFNAMSIZ = 16;

export function describeErrno(e: number): string {
  return `${String(c.strerror(e))} (errno ${e})`;
}

/**
 * Opens the TUN device `name` (creating it if missing, attaching to it when
 * it exists as a persistent device) in non-blocking mode. No
 * packet-information header, but a virtio_net_hdr before each packet
 * (IFF_VNET_HDR) and checksum and TCP segmentation offload turned on
 * (TUNSETOFFLOAD): the kernel hands over and takes GSO super-packets of up to
 * ~64 KB instead of MTU-sized packets, so that one read() and one sendto()
 * move ~45 TCP segments. (The flag is per attachment, so a persistent device
 * made by `ip tuntap add mode tun` works as is.)
 */
export function openTun(name: string): number {
  const fd = c.open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC, 'int', 0) as number;
  if (fd < 0) {
    const e = errno();
    throw new TwillError('TunUnavailable', `cannot open /dev/net/tun: ${describeErrno(e)} (load the tun module: modprobe tun)`);
  }
  const ifr = Buffer.alloc(40); // struct ifreq
  ifr.write(name, 0, IFNAMSIZ - 1, 'latin1');
  ifr.writeUInt16LE(IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, IFNAMSIZ);
  if ((c.ioctl(fd, TUNSETIFF, 'void *', ifr) as number) < 0) {
    const e = errno();
    c.close(fd);
    const hint = e === 16 ? `: another process holds ${name} (a flannel still running?)` : e === 22 ? `: ${name} exists with other TUN flags` : '';
    throw new TwillError('TunUnavailable', `cannot attach to TUN device ${name}: ${describeErrno(e)}${hint}`);
  }
  const size = Buffer.alloc(4);
  size.writeInt32LE(VNET_HDR_LEN);
  if ((c.ioctl(fd, TUNSETVNETHDRSZ, 'void *', size) as number) < 0 || (c.ioctl(fd, TUNSETOFFLOAD, 'unsigned long', TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) as number) < 0) {
    const e = errno();
    c.close(fd);
    throw new TwillError('TunUnavailable', `cannot set up offloads on TUN device ${name}: ${describeErrno(e)}`);
  }
  return fd;
}

// <linux/udp.h>
const SOL_UDP = 17;
const UDP_SEGMENT = 103;
const UDP_GRO = 104;

/**
 * Turns on UDP GSO for sends (every send longer than `segment` bytes leaves
 * as datagrams of `segment` bytes, cut by the kernel or the NIC) and UDP GRO
 * for receives (datagrams of one size from one sender arrive together in one
 * read). Either may be missing on an old kernel: the data plane then sends
 * and reads one datagram at a time.
 */
export function udpOffloads(fd: number, segment: number): { gso: boolean; gro: boolean } {
  const v = Buffer.alloc(4);
  v.writeInt32LE(segment);
  const gso = (c.setsockopt(fd, SOL_UDP, UDP_SEGMENT, v, 4) as number) === 0;
  v.writeInt32LE(1);
  const gro = (c.setsockopt(fd, SOL_UDP, UDP_GRO, v, 4) as number) === 0;
  return { gso, gro };
}

/** struct sockaddr_in for an IPv4 address (as a 32-bit number) and port. */
export function sockaddrIn(ip: number, port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.writeUInt32BE(ip >>> 0, 4);
  return b;
}

/** A non-blocking UDP socket bound to ip:port, with buffers big enough for bursts. */
export function openUdp(ip: number, port: number, bufferBytes = 4 << 20): number {
  const fd = c.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new TwillError('SocketFailed', `cannot create a UDP socket: ${describeErrno(errno())}`);
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4);
  const size = Buffer.alloc(4);
  size.writeInt32LE(bufferBytes);
  // FORCE ignores net.core.[rw]mem_max (we run as root); the plain option is the fallback.
  if ((c.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4) as number) < 0) c.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, size, 4);
  if ((c.setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, size, 4) as number) < 0) c.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, size, 4);
  const addr = sockaddrIn(ip, port);
  if ((c.bind(fd, addr, 16) as number) < 0) {
    const e = errno();
    c.close(fd);
    const ipText = [ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].join('.');
    const hint = e === 98 ? ': is another flannel or twill agent running on this host?' : e === 99 ? ': the address is not on this host' : '';
    throw new TwillError('SocketFailed', `cannot bind UDP ${ipText}:${port}: ${describeErrno(e)}${hint}`);
  }
  return fd;
}
