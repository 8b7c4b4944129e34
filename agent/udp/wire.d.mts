// Types of wire.mjs, the udp backend's wire format (plain JavaScript for the worker threads).

export const HEADER: 16;
export const VERSION: 1;
export const VNET: 10;
export const MAX_PACKET: number;
export const MAX_UDP_PAYLOAD: 65507;
export const MAX_GSO_SEGMENTS: 64;

export interface Layout {
  segment: number;
  chunk: number;
  perSend: number;
  maxChunks: number;
}
export function layout(segment: number): Layout;

export interface Header {
  seq: number;
  offset: number;
  total: number;
  /** bytes of packet data in this datagram */
  size: number;
}
export function writeHeader(buf: Buffer, at: number, seq: number, offset: number, total: number): void;
export function readHeader(buf: Buffer, at: number, len: number): Header | undefined;

export class Reassembler {
  constructor(slots?: number);
  readonly incomplete: number;
  takeRest(sender: number, seq: number, total: number, from: number): Buffer | undefined;
  add(sender: number, h: Header, data: Buffer, start: number, end: number): Buffer | undefined;
}
