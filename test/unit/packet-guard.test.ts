// The embedded broker's packet size limit, read from each fixed header as
// the bytes go by (MQTT 3.1.1 §2.2.3), wherever the chunks split them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PacketScanner } from '../../control/local/packet-guard.js';

/** An MQTT packet of a type byte and a body of n bytes, with its remaining length encoded. */
function packet(type: number, n: number): Buffer {
  const len: number[] = [];
  let x = n;
  do {
    let b = x % 128;
    x = Math.floor(x / 128);
    if (x > 0) b |= 0x80;
    len.push(b);
  } while (x > 0);
  return Buffer.concat([Buffer.from([type, ...len]), Buffer.alloc(n, 0x61)]);
}

test('packets within the limit pass however the stream is cut', () => {
  const stream = Buffer.concat([packet(0x10, 40), packet(0x30, 200), packet(0xc0, 0), packet(0x30, 16_000), packet(0x82, 130)]);
  for (const size of [1, 2, 3, 7, 128, 4096, stream.length]) {
    const s = new PacketScanner(16_384);
    for (let i = 0; i < stream.length; i += size) assert.equal(s.scan(stream.subarray(i, i + size)), undefined, `chunks of ${size}`);
  }
});

test('a packet announcing more than the limit is caught at its header, before its body', () => {
  const big = Buffer.from([0x30, 0x80, 0x80, 0x80, 0x20]); // a PUBLISH header announcing 64 MiB (32 × 128³)
  const s = new PacketScanner(32 * 1024);
  // one byte at a time: nothing until the header is whole, then refused with no body byte read
  for (let i = 0; i < 4; i++) assert.equal(s.scan(big.subarray(i, i + 1)), undefined);
  assert.deepEqual(s.scan(big.subarray(4, 5)), { kind: 'too-large', length: 64 * 1024 * 1024 });
  // a length whose first bytes already pass the limit is refused before its last byte
  const early = new PacketScanner(100);
  assert.equal(early.scan(Buffer.from([0x30])), undefined);
  assert.deepEqual(early.scan(Buffer.from([0xff])), { kind: 'too-large', length: 127 });
});

test('a too-large packet after good ones is caught; a length of five bytes is malformed', () => {
  const s = new PacketScanner(1000);
  assert.equal(s.scan(packet(0x30, 999)), undefined);
  assert.deepEqual(s.scan(packet(0x30, 1001).subarray(0, 3)), { kind: 'too-large', length: 1001 });
  const m = new PacketScanner(Number.MAX_SAFE_INTEGER);
  assert.deepEqual(m.scan(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), { kind: 'malformed', why: 'remaining length longer than four bytes' });
});
