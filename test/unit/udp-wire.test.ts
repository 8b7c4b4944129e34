// The udp backend's wire format: how a TUN packet is cut into datagrams and
// put together again when the datagrams arrive one by one, out of order,
// twice, or not at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { HEADER, layout, MAX_PACKET, readHeader, Reassembler, VNET, writeHeader } from '../../agent/udp/wire.mjs';

/** The datagrams a sender puts on the wire for `packet`, as worker.mjs lays them out. */
function datagrams(packet: Buffer, segment: number, seq: number): Buffer[] {
  const { chunk } = layout(segment);
  const out: Buffer[] = [];
  for (let offset = 0; offset < packet.length; offset += chunk) {
    const part = packet.subarray(offset, offset + chunk);
    const d = Buffer.alloc(HEADER + part.length);
    writeHeader(d, 0, seq, offset, packet.length);
    part.copy(d, HEADER);
    out.push(d);
  }
  return out;
}

function feed(r: Reassembler, sender: number, ds: Buffer[]): Buffer[] {
  const done: Buffer[] = [];
  for (const d of ds) {
    const h = readHeader(d, 0, d.length);
    assert.ok(h, 'a datagram of ours parses');
    const whole = r.add(sender, h, d, HEADER, d.length);
    if (whole) done.push(Buffer.from(whole));
  }
  return done;
}

test('a 64 KB super-packet fills 1,472-byte datagrams, in at most two GSO sends', () => {
  const l = layout(1472);
  assert.equal(l.chunk, 1472 - HEADER);
  assert.equal(l.perSend, 44); // 44 x 1,472 = 64,768 bytes, within 65,507
  assert.ok(l.perSend * l.segment <= 65_507);
  assert.ok(l.maxChunks * l.chunk >= MAX_PACKET);
  assert.ok(l.maxChunks <= 2 * l.perSend);
  assert.throws(() => layout(40), /segment size 40 is too small/);
});

test('chunks arriving in any order, or twice, give back the packet exactly once', () => {
  const packet = randomBytes(64_000);
  const ds = datagrams(packet, 1472, 41);
  assert.equal(ds.length, Math.ceil(64_000 / 1456));
  assert.ok(ds.every((d) => d.length <= 1472));
  const shuffled = [...ds, ds[3]!, ds[0]!].sort(() => Math.random() - 0.5);
  const r = new Reassembler();
  const done = feed(r, 1, shuffled);
  assert.equal(done.length, 1);
  assert.ok(done[0]!.equals(packet));
  assert.equal(r.incomplete, 0);
});

test('two senders using the same seq are kept apart; interleaved packets of one sender too', () => {
  const a = randomBytes(5000);
  const b = randomBytes(7000);
  const c = randomBytes(3000);
  const fromA = datagrams(a, 1472, 9);
  const fromB = datagrams(b, 1472, 9);
  const r = new Reassembler();
  const done: Buffer[] = [];
  for (let i = 0; i < Math.max(fromA.length, fromB.length); i++) {
    if (fromA[i]) done.push(...feed(r, 1, [fromA[i]!]));
    if (fromB[i]) done.push(...feed(r, 2, [fromB[i]!]));
  }
  assert.equal(done.length, 2);
  assert.ok(done.some((d) => d.equals(a)) && done.some((d) => d.equals(b)));
  const ones = datagrams(c, 1472, 10);
  const twos = datagrams(a, 1472, 11);
  const got = feed(r, 1, [ones[0]!, twos[0]!, twos[1]!, ones[1]!, ones[2]!, twos[2]!, twos[3]!]);
  assert.deepEqual(got.map((g) => g.length), [3000, 5000]);
});

test('a packet that lost a chunk is given up and counted once newer ones crowd it out, and never delivered', () => {
  const r = new Reassembler(4);
  const lossy = datagrams(randomBytes(9000), 1472, 100);
  assert.deepEqual(feed(r, 1, lossy.slice(1)), []);
  let delivered = 0;
  for (let seq = 101; seq < 110; seq++) delivered += feed(r, 1, datagrams(randomBytes(4000), 1472, seq).reverse()).length;
  assert.equal(delivered, 9);
  assert.equal(r.incomplete, 0, 'complete packets never evict');
  for (let seq = 200; seq < 204; seq++) feed(r, 1, datagrams(randomBytes(4000), 1472, seq).slice(1));
  assert.equal(r.incomplete, 1, 'the lossy one went when a fifth packet was in flight');
  // its missing chunk arriving late completes nothing
  assert.deepEqual(feed(r, 1, lossy.slice(0, 1)), []);
});

test('a restarted sender reusing a seq with another length does not complete a stale packet', () => {
  const r = new Reassembler();
  const old = datagrams(randomBytes(6000), 1472, 5);
  feed(r, 1, old.slice(0, 2));
  const fresh = randomBytes(3000);
  const done = feed(r, 1, datagrams(fresh, 1472, 5));
  assert.equal(done.length, 1);
  assert.ok(done[0]!.equals(fresh));
  assert.equal(r.incomplete, 1);
});

test('datagrams that are not ours or do not add up are refused', () => {
  const d = datagrams(randomBytes(3000), 1472, 1)[1]!;
  assert.ok(readHeader(d, 0, d.length));
  const wrongVersion = Buffer.from(d);
  wrongVersion[0] = 2;
  assert.equal(readHeader(wrongVersion, 0, d.length), undefined);
  const pastEnd = Buffer.from(d);
  pastEnd.writeUInt32BE(2000, 8); // offset 2,000 + 1,456 bytes > total 3,000
  assert.equal(readHeader(pastEnd, 0, d.length), undefined);
  const huge = Buffer.from(d);
  huge.writeUInt32BE(MAX_PACKET + 1, 12);
  assert.equal(readHeader(huge, 0, d.length), undefined);
  const tiny = Buffer.from(d);
  tiny.writeUInt32BE(VNET + 19, 12);
  assert.equal(readHeader(tiny, 0, d.length), undefined);
  assert.equal(readHeader(d, 0, HEADER), undefined, 'a header without data');
  // overlapping chunks that add up to the total are dropped, not delivered
  const r = new Reassembler();
  const a = Buffer.alloc(HEADER + 100);
  writeHeader(a, 0, 3, 0, 150);
  const b = Buffer.alloc(HEADER + 100);
  writeHeader(b, 0, 3, 50, 150);
  assert.deepEqual(feed(r, 1, [a, b]), []);
  assert.equal(r.incomplete, 1);
});
