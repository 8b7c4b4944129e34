// A small client for strongSwan's vici protocol (the control socket that
// swanctl uses), so the agent configures charon directly: the PSK travels
// over a local socket only, never through a file or a command line.
//
// Wire format (strongSwan's src/libcharon/plugins/vici/README.md): each
// packet is a 32-bit big-endian length, a type byte, for named types a
// length-prefixed name, then a message. A message is a flat sequence of
// elements: section start/end, key = value, list start/item/end.
// Requests are answered in order, one at a time per connection; a streamed
// command (list-sas) sends its results as events before its response.
import { createConnection, type Socket } from 'node:net';
import { TwillError } from '../../core/errors.js';

export type ViciValue = string | string[] | ViciMessage;
export interface ViciMessage {
  [key: string]: ViciValue;
}

const Packet = { CmdRequest: 0, CmdResponse: 1, CmdUnknown: 2, EventRegister: 3, EventUnregister: 4, EventConfirm: 5, EventUnknown: 6, Event: 7 } as const;
type Packet = (typeof Packet)[keyof typeof Packet];

const Element = { SectionStart: 1, SectionEnd: 2, KeyValue: 3, ListStart: 4, ListItem: 5, ListEnd: 6 } as const;

const MAX_PACKET = 512 * 1024;

/** A message's elements, as they go on the wire after the packet header. */
export function encodeMessage(msg: ViciMessage, out: Buffer[] = []): Buffer[] {
  const name = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 255) throw new Error(`vici name too long: ${s.slice(0, 40)}`);
    return Buffer.concat([Buffer.from([b.length]), b]);
  };
  const value = (v: string) => {
    const b = Buffer.from(v, 'utf8');
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    return Buffer.concat([len, b]);
  };
  for (const [k, v] of Object.entries(msg)) {
    if (typeof v === 'string') out.push(Buffer.from([Element.KeyValue]), name(k), value(v));
    else if (Array.isArray(v)) {
      out.push(Buffer.from([Element.ListStart]), name(k));
      for (const item of v) out.push(Buffer.from([Element.ListItem]), value(item));
      out.push(Buffer.from([Element.ListEnd]));
    } else {
      out.push(Buffer.from([Element.SectionStart]), name(k));
      encodeMessage(v, out);
      out.push(Buffer.from([Element.SectionEnd]));
    }
  }
  return out;
}

function encodePacket(type: Packet, name: string | undefined, msg?: ViciMessage): Buffer {
  const parts: Buffer[] = [Buffer.from([type])];
  if (name !== undefined) {
    const n = Buffer.from(name, 'utf8');
    parts.push(Buffer.from([n.length]), n);
  }
  if (msg) encodeMessage(msg, parts);
  const body = Buffer.concat(parts);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

export function decodeMessage(b: Buffer, start = 0): ViciMessage {
  const root: ViciMessage = {};
  const stack: ViciMessage[] = [root];
  let list: string[] | undefined;
  let i = start;
  const need = (n: number) => {
    if (i + n > b.length) throw new Error('vici message truncated');
  };
  const readName = () => {
    need(1);
    const len = b[i++] as number;
    need(len);
    const s = b.toString('utf8', i, i + len);
    i += len;
    return s;
  };
  const readValue = () => {
    need(2);
    const len = b.readUInt16BE(i);
    i += 2;
    need(len);
    const s = b.toString('utf8', i, i + len);
    i += len;
    return s;
  };
  while (i < b.length) {
    const t = b[i++];
    const top = stack[stack.length - 1] as ViciMessage;
    switch (t) {
      case Element.SectionStart: {
        const s: ViciMessage = {};
        top[readName()] = s;
        stack.push(s);
        break;
      }
      case Element.SectionEnd:
        if (stack.length < 2) throw new Error('vici message: unbalanced section end');
        stack.pop();
        break;
      case Element.KeyValue: {
        const k = readName();
        top[k] = readValue();
        break;
      }
      case Element.ListStart:
        list = [];
        top[readName()] = list;
        break;
      case Element.ListItem:
        if (!list) throw new Error('vici message: list item outside a list');
        list.push(readValue());
        break;
      case Element.ListEnd:
        list = undefined;
        break;
      default:
        throw new Error(`vici message: unknown element type ${t}`);
    }
  }
  return root;
}

interface Pending {
  resolve: (m: ViciMessage) => void;
  reject: (e: Error) => void;
  /** for streamed commands: the events that arrive before the response */
  events?: ViciMessage[];
  event?: string;
}

export class Vici {
  private buf: Buffer = Buffer.alloc(0);
  private queue: Pending[] = [];
  /** serialises requests: vici answers one at a time per connection */
  private chain: Promise<unknown> = Promise.resolve();
  private closed?: Error;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => this.onData(d));
    const fail = (e: Error) => {
      this.closed = e;
      for (const p of this.queue.splice(0)) p.reject(e);
    };
    sock.on('error', (e) => fail(new TwillError('ViciFailed', `charon's control socket failed: ${e.message}`)));
    sock.on('close', () => fail(new TwillError('ViciFailed', "charon's control socket closed")));
  }

  static connect(path: string, timeoutMs = 2000): Promise<Vici> {
    return new Promise((resolve, reject) => {
      const sock = createConnection({ path });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new TwillError('ViciFailed', `no answer on ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        resolve(new Vici(sock));
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(new TwillError('ViciFailed', `cannot connect to ${path}: ${e.message}`));
      });
    });
  }

  get alive(): boolean {
    return !this.closed && !this.sock.destroyed;
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_PACKET) {
        this.sock.destroy(new Error(`vici packet of ${len} bytes is too large`));
        return;
      }
      if (this.buf.length < 4 + len) return;
      const pkt = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      this.onPacket(pkt);
    }
  }

  private onPacket(pkt: Buffer): void {
    const type = pkt[0] as Packet;
    const head = this.queue[0];
    if (type === Packet.Event) {
      const nameLen = pkt[1] as number;
      const name = pkt.toString('utf8', 2, 2 + nameLen);
      if (head?.events && head.event === name) head.events.push(decodeMessage(pkt, 2 + nameLen));
      return;
    }
    if (!head) return;
    this.queue.shift();
    try {
      if (type === Packet.CmdResponse) head.resolve(decodeMessage(pkt, 1));
      else if (type === Packet.EventConfirm) head.resolve({});
      else if (type === Packet.CmdUnknown) head.reject(new TwillError('ViciFailed', 'charon does not know this vici command (is the vici plugin too old?)'));
      else if (type === Packet.EventUnknown) head.reject(new TwillError('ViciFailed', 'charon does not know this vici event'));
      else head.reject(new TwillError('ViciFailed', `unexpected vici packet type ${type}`));
    } catch (e) {
      head.reject(e as Error);
    }
  }

  private send(type: Packet, name: string, msg?: ViciMessage, extra?: Partial<Pending>): Promise<ViciMessage> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.queue.push({ resolve, reject, ...extra });
      this.sock.write(encodePacket(type, name, msg));
    });
  }

  private serial<T>(fn: () => Promise<T>, timeoutMs: number, what: string): Promise<T> {
    const run = this.chain.then(() => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            // A late answer would be matched with the next request: give the connection up.
            this.sock.destroy();
            reject(new TwillError('ViciFailed', `charon did not answer ${what} within ${timeoutMs} ms`));
          }, timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
    });
    this.chain = run.catch(() => {});
    return run;
  }

  /** A command; a response with success = no is an error carrying charon's errmsg. */
  request(cmd: string, msg?: ViciMessage, timeoutMs = 10_000): Promise<ViciMessage> {
    return this.serial(async () => {
      const res = await this.send(Packet.CmdRequest, cmd, msg);
      if (res.success === 'no') throw new TwillError('ViciFailed', `charon refused ${cmd}: ${typeof res.errmsg === 'string' ? res.errmsg : 'no reason given'}`);
      return res;
    }, timeoutMs, cmd);
  }

  /** A streamed command: registers for its event, runs it, and returns the events it produced. */
  stream(cmd: string, event: string, msg?: ViciMessage, timeoutMs = 10_000): Promise<ViciMessage[]> {
    return this.serial(async () => {
      await this.send(Packet.EventRegister, event);
      const events: ViciMessage[] = [];
      try {
        const res = await this.send(Packet.CmdRequest, cmd, msg, { events, event });
        if (res.success === 'no') throw new TwillError('ViciFailed', `charon refused ${cmd}: ${typeof res.errmsg === 'string' ? res.errmsg : 'no reason given'}`);
      } finally {
        await this.send(Packet.EventUnregister, event).catch(() => {});
      }
      return events;
    }, timeoutMs, cmd);
  }

  close(): void {
    this.sock.destroy();
  }
}
