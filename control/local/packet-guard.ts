// The embedded broker's limit on an MQTT packet's size, enforced before the
// packet is buffered. aedes' parser (mqtt-packet) collects a whole packet in
// memory before anyone can look at it, so a 64 MB PUBLISH was held whole
// before the payload check refused it; a handful of such connections cost
// hundreds of MB. This reads each packet's fixed header as the bytes go by
// (MQTT 3.1.1 §2.2: one type byte, then the remaining length as a variable
// byte integer of up to four bytes) and closes the connection as soon as a
// length over the limit is announced, before its body arrives.
//
// It also paces each connection's PUBLISH packets (a token bucket): past its
// burst, the connection is read no faster than its rate, so a node that
// floods is slowed by TCP itself and its excess costs the controller nothing,
// not even a parse; every other connection is read as usual.
import { Readable, type Duplex } from 'node:stream';
import type { Socket } from 'node:net';

/** What the scanner found wrong with the stream, or undefined while it is fine. */
export type PacketProblem = { kind: 'too-large'; length: number } | { kind: 'malformed'; why: string };

/**
 * Follows MQTT packet boundaries across chunks without holding any bytes:
 * per packet, at most five header bytes are looked at one by one, and the
 * body is skipped by its length.
 */
export class PacketScanner {
  private state: 'type' | 'length' | 'body' = 'type';
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private remaining = 0;
  /** PUBLISH packets whose header has been read so far */
  publishes = 0;

  constructor(private readonly maxPacketBytes: number) {}

  /** Scans one chunk; returns the first problem, after which the connection must be closed. */
  scan(chunk: Uint8Array): PacketProblem | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'body') {
        const take = Math.min(this.remaining, chunk.length - i);
        this.remaining -= take;
        i += take;
        if (this.remaining === 0) this.state = 'type';
        continue;
      }
      const byte = chunk[i++] as number;
      if (this.state === 'type') {
        if (byte >> 4 === 3) this.publishes++;
        this.state = 'length';
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
        continue;
      }
      this.length += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      this.lengthBytes++;
      if (byte & 0x80) {
        if (this.lengthBytes === 4) return { kind: 'malformed', why: 'remaining length longer than four bytes' };
        // Refused as soon as what is announced so far already exceeds the limit.
        if (this.length > this.maxPacketBytes) return { kind: 'too-large', length: this.length };
        continue;
      }
      if (this.length > this.maxPacketBytes) return { kind: 'too-large', length: this.length };
      this.remaining = this.length;
      this.state = this.remaining === 0 ? 'type' : 'body';
    }
    return undefined;
  }
}

/** How fast one connection may publish: `burst` at once, then `perSecond`. */
export interface PublishPace {
  burst: number;
  perSecond: number;
  /** told when a connection is first held back, then at most once a minute, with how many publishes waited */
  onSlowed(held: number): void;
}

/**
 * The socket as aedes should see it: the same bytes, except that the
 * connection is closed (and onProblem told) at the first packet whose
 * announced size is over the limit, before its body is read; and, with a
 * pace, a connection publishing faster than it is read more slowly.
 */
export function guardPackets(socket: Socket, maxPacketBytes: number, onProblem: (p: PacketProblem) => void, pace?: PublishPace): Duplex {
  const scanner = new PacketScanner(maxPacketBytes);
  let tokens = pace?.burst ?? 0;
  let at = Date.now();
  let held = 0;
  let reportedAt = -Infinity;
  /** while a fast publisher waits for its bucket, nothing resumes the socket but the timer */
  let holding = false;
  // What aedes reads: the socket's bytes once checked, read no faster than
  // aedes takes them (the socket pauses while this is full) or the pace allows.
  const checked = new Readable({
    read() {
      if (!holding) socket.resume();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  socket.on('data', (chunk: Buffer) => {
    const before = scanner.publishes;
    const problem = scanner.scan(chunk);
    if (problem) {
      onProblem(problem);
      socket.destroy();
      return;
    }
    if (!checked.push(chunk)) socket.pause();
    if (!pace) return;
    const now = Date.now();
    tokens = Math.min(pace.burst, tokens + ((now - at) / 1000) * pace.perSecond) - (scanner.publishes - before);
    at = now;
    if (tokens >= 0) return;
    // Passed on now; the next chunk is not read until the bucket is back at zero.
    held += scanner.publishes - before;
    if (now - reportedAt >= 60_000) {
      pace.onSlowed(held);
      held = 0;
      reportedAt = now;
    }
    holding = true;
    socket.pause();
    setTimeout(() => {
      holding = false;
      socket.resume();
    }, Math.ceil((-tokens / pace.perSecond) * 1000)).unref();
  });
  socket.on('end', () => checked.push(null));
  socket.on('error', (e) => checked.destroy(e));
  socket.on('close', () => checked.destroy());
  // What aedes writes goes straight to the socket, corks included:
  // mqtt-packet corks a packet's pieces into one writev, where a wrapper
  // stream in between wrote each with a syscall of its own and kept a second
  // copy of a slow reader's backlog (a 5,000-agent storm: 50% more CPU, 2.4x
  // the memory).
  const conn = Object.assign(checked, {
    write: socket.write.bind(socket),
    cork: () => socket.cork(),
    uncork: () => socket.uncork(),
    end: socket.end.bind(socket),
  });
  socket.on('drain', () => conn.emit('drain'));
  return conn as unknown as Duplex;
}
