/**
 * The client-to-server bytes of one HTTP/2 connection, read frame by frame so that a `:authority`
 * Node's http2 (nghttp2) refuses reaches grpc-js as `localhost`. grpc-go before 1.57 (every
 * sysbox-runc built with sysbox-ipc's pinned grpc-go 1.34) sends the dial target, the socket path,
 * as `:authority`; nghttp2 allows only RFC 3986 authority characters and resets every such stream
 * with PROTOCOL_ERROR. Node's http2 and grpc-js have no option to accept it (nodejs/node#32326).
 *
 * The first header block decides for the whole connection (a client sends one authority per
 * connection): an acceptable one passes, with everything after it, byte for byte. A refused one
 * makes the connection a rewritten one: every header block on it is decoded with the connection's
 * own HPACK decoder (hpack.js; the client's dynamic table lives there) and encoded again as
 * literals that never enter the server's dynamic table, so the server's decoder state never depends
 * on the client's. Frames other than HEADERS and CONTINUATION pass unchanged, streamed as they come.
 *
 * With `ownSettingsSent`, the front sent the client a SETTINGS frame of its own before any server
 * (so that the client sends its first request before the connection is handed over): the client's
 * first SETTINGS ACK answers it and is taken out, so the server sees exactly the ACKs of its own.
 */
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';

/** The part of hpack.js (RFC 7541; it ships no types) used here and in the tests. */
export interface HpackHeader {
  name: string;
  value: string;
  neverIndex?: boolean;
  /** false: a literal without indexing (the peer's dynamic table is left alone). */
  incremental?: boolean;
  huffman?: boolean;
}
interface Decompressor extends Duplex {
  write(chunk: Buffer): boolean;
  execute(): void;
  read(): HpackHeader | null;
}
interface Compressor extends Duplex {
  write(headers: HpackHeader[]): boolean;
  read(): Buffer | null;
}
export interface Hpack {
  decompressor: { create(options: { table: { maxSize: number } }): Decompressor };
  compressor: { create(options: { table: { maxSize: number } }): Compressor };
}
export const hpack = createRequire(import.meta.url)('hpack.js') as Hpack;

/** The client connection preface (RFC 9113 3.4), passed as it is; nghttp2 checks it. */
export const PREFACE_LENGTH = 24;
const FRAME_HEADER = 9;
const TYPE_HEADERS = 0x1;
const TYPE_SETTINGS = 0x4;
const TYPE_CONTINUATION = 0x9;
const FLAG_ACK = 0x1;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** Frames written are at most this long: every HTTP/2 peer accepts 16 KiB (SETTINGS_MAX_FRAME_SIZE's floor). */
const MAX_OUT_FRAME = 16_384;
/** A header block bigger than this ends the connection (grpc-js itself accepts 16 KiB of metadata). */
export const MAX_HEADER_BLOCK = 1 << 20;
/**
 * The client may size its dynamic table up to what the server announced (Node: 4 KiB). A larger
 * table here only keeps entries the client no longer refers to.
 */
const DECODER_TABLE = 65_536;

/** What nghttp2 accepts in `:authority` (RFC 3986 authority characters; checked against Node 20). */
const ACCEPTED_AUTHORITY = /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]*$/;

/** What a refused authority becomes: what grpc-go >= 1.57 sends for a unix socket. */
export const REPLACEMENT_AUTHORITY = 'localhost';

export function authorityAccepted(value: string): boolean {
  return ACCEPTED_AUTHORITY.test(value);
}

/** An empty SETTINGS frame (all defaults): what the front sends before handing a connection over. */
export const EMPTY_SETTINGS_FRAME = Buffer.from([0, 0, 0, TYPE_SETTINGS, 0, 0, 0, 0, 0]);

/**
 * deciding: before the first header block; accepted: its authority passes, waiting for the ACK of
 * the front's SETTINGS; pass: nothing more to look at; rewrite: every header block is rewritten.
 */
export type RewriteMode = 'deciding' | 'accepted' | 'pass' | 'rewrite';

export class Http2FrameError extends Error {}

export interface AuthorityRewriter {
  /** Client bytes in, server bytes out (nothing while a header frame is incomplete). */
  push(chunk: Buffer): Buffer[];
  readonly mode: RewriteMode;
  /** The refused authority this connection sent, once one was seen. */
  readonly refused: string | undefined;
}

/** One header block as it arrived: its first frame's type, flags, stream, priority fields and fragments. */
interface Block {
  flags: number;
  stream: number;
  priority: Buffer | undefined;
  fragments: Buffer[];
  size: number;
  raw: Buffer[];
}

function frameHeader(length: number, type: number, flags: number, stream: number): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return h;
}

/** Decodes a whole header block with the connection's decoder (its dynamic table moves on). */
function decodeBlock(decoder: Decompressor, block: Buffer): HpackHeader[] {
  let failure: unknown;
  const onError = (err: unknown): void => {
    failure = err;
  };
  decoder.once('error', onError);
  decoder.write(block);
  decoder.execute();
  decoder.off('error', onError);
  const headers: HpackHeader[] = [];
  for (let h = decoder.read(); h !== null; h = decoder.read()) headers.push(h);
  if (failure !== undefined)
    throw new Http2FrameError(`bad HPACK header block: ${(failure as Error).message ?? String(failure)}`);
  return headers;
}

/** The frames of a header block encoded anew: HEADERS (priority fields kept, no padding), then CONTINUATIONs. */
function encodeBlock(encoder: Compressor, block: Block, headers: HpackHeader[]): Buffer[] {
  encoder.write(
    headers.map((h) => ({
      name: h.name,
      value: h.name === ':authority' && !authorityAccepted(h.value) ? REPLACEMENT_AUTHORITY : h.value,
      neverIndex: h.neverIndex,
      incremental: false,
      huffman: false,
    })),
  );
  const encoded = encoder.read() ?? Buffer.alloc(0);
  const out: Buffer[] = [];
  const prio = block.priority;
  const firstRoom = MAX_OUT_FRAME - (prio?.length ?? 0);
  let offset = Math.min(firstRoom, encoded.length);
  const flags =
    (block.flags & (FLAG_END_STREAM | FLAG_PRIORITY)) | (offset === encoded.length ? FLAG_END_HEADERS : 0);
  out.push(frameHeader(offset + (prio?.length ?? 0), TYPE_HEADERS, flags, block.stream));
  if (prio) out.push(prio);
  out.push(encoded.subarray(0, offset));
  while (offset < encoded.length) {
    const n = Math.min(MAX_OUT_FRAME, encoded.length - offset);
    const last = offset + n === encoded.length;
    out.push(frameHeader(n, TYPE_CONTINUATION, last ? FLAG_END_HEADERS : 0, block.stream));
    out.push(encoded.subarray(offset, offset + n));
    offset += n;
  }
  return out;
}

export function createAuthorityRewriter(opts: { ownSettingsSent?: boolean } = {}): AuthorityRewriter {
  let mode: RewriteMode = 'deciding';
  /** The client's ACK of the front's own SETTINGS, still to take out. */
  let ackToDrop = opts.ownSettingsSent === true;
  let refused: string | undefined;
  let prefaceLeft = PREFACE_LENGTH;
  /** Payload bytes of a non-header frame still to pass through as they come. */
  let passLeft = 0;
  let pending: Buffer | undefined;
  let block: Block | undefined;
  let decoder: Decompressor | undefined = hpack.decompressor.create({ table: { maxSize: DECODER_TABLE } });
  let encoder: Compressor | undefined;

  /** A complete HEADERS or CONTINUATION frame: adds its fragment; the block's frames when it ends. */
  function headerFrame(frame: Buffer, type: number, flags: number, stream: number, out: Buffer[]): void {
    const length = frame.length - FRAME_HEADER;
    let start = FRAME_HEADER;
    let end = frame.length;
    if (type === TYPE_HEADERS) {
      if (block) throw new Http2FrameError('HEADERS inside an unfinished header block');
      let padding = 0;
      if (flags & FLAG_PADDED) {
        if (length < 1) throw new Http2FrameError('padded HEADERS without a pad length');
        padding = frame[start]!;
        start += 1;
      }
      const priority = flags & FLAG_PRIORITY ? frame.subarray(start, start + 5) : undefined;
      if (priority) start += 5;
      end -= padding;
      if (end < start) throw new Http2FrameError('HEADERS padding longer than the frame');
      block = { flags, stream, priority, fragments: [], size: 0, raw: [] };
    } else {
      if (!block || block.stream !== stream) throw new Http2FrameError('CONTINUATION outside a header block');
    }
    block.fragments.push(frame.subarray(start, end));
    block.size += end - start;
    block.raw.push(frame);
    if (block.size > MAX_HEADER_BLOCK) throw new Http2FrameError('header block too large');
    if (!(flags & FLAG_END_HEADERS)) return;
    const done = block;
    block = undefined;
    if (mode === 'accepted') {
      // Decided already; only the ACK is still awaited.
      out.push(...done.raw);
      return;
    }
    const headers = decodeBlock(decoder!, Buffer.concat(done.fragments, done.size));
    const authority = headers.find((h) => h.name === ':authority')?.value;
    if (mode === 'deciding') {
      if (authority === undefined || authorityAccepted(authority)) {
        // Fast path: the client's own bytes, and no more decoding on this connection.
        mode = ackToDrop ? 'accepted' : 'pass';
        decoder = undefined;
        out.push(...done.raw);
        return;
      }
      mode = 'rewrite';
      refused = authority;
      encoder = hpack.compressor.create({ table: { maxSize: 4096 } });
    }
    out.push(...encodeBlock(encoder!, done, headers));
  }

  /** Parses frames from `buf` while not in pass mode; returns what is left incomplete. */
  function frames(buf: Buffer, out: Buffer[]): Buffer | undefined {
    let at = 0;
    while (at < buf.length) {
      if (mode === 'pass') {
        out.push(at === 0 ? buf : buf.subarray(at));
        return undefined;
      }
      if (passLeft > 0) {
        const n = Math.min(passLeft, buf.length - at);
        out.push(buf.subarray(at, at + n));
        passLeft -= n;
        at += n;
        continue;
      }
      if (buf.length - at < FRAME_HEADER) return buf.subarray(at);
      const length = buf.readUIntBE(at, 3);
      const type = buf[at + 3]!;
      if (ackToDrop && type === TYPE_SETTINGS && buf[at + 4]! & FLAG_ACK) {
        if (block) throw new Http2FrameError('SETTINGS inside a header block');
        if (length !== 0) throw new Http2FrameError('SETTINGS ACK with a payload');
        ackToDrop = false;
        at += FRAME_HEADER;
        if (mode === 'accepted') mode = 'pass';
        continue;
      }
      if (type !== TYPE_HEADERS && type !== TYPE_CONTINUATION) {
        if (block) throw new Http2FrameError(`frame type ${type} inside a header block`);
        const n = Math.min(FRAME_HEADER + length, buf.length - at);
        out.push(buf.subarray(at, at + n));
        passLeft = FRAME_HEADER + length - n;
        at += n;
        continue;
      }
      if (length > MAX_HEADER_BLOCK) throw new Http2FrameError('header frame too large');
      if (buf.length - at < FRAME_HEADER + length) return buf.subarray(at);
      const flags = buf[at + 4]!;
      const stream = buf.readUInt32BE(at + 5) & 0x7fffffff;
      // A copy: the frame may be held until its block ends, past the chunk it came in.
      const frame = Buffer.from(buf.subarray(at, at + FRAME_HEADER + length));
      at += FRAME_HEADER + length;
      headerFrame(frame, type, flags, stream, out);
    }
    return undefined;
  }

  return {
    get mode() {
      return mode;
    },
    get refused() {
      return refused;
    },
    push(chunk) {
      if (mode === 'pass') return [chunk];
      const out: Buffer[] = [];
      let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      pending = undefined;
      if (prefaceLeft > 0) {
        const n = Math.min(prefaceLeft, buf.length);
        out.push(buf.subarray(0, n));
        prefaceLeft -= n;
        buf = buf.subarray(n);
      }
      const rest = frames(buf, out);
      if (rest) pending = Buffer.from(rest);
      return out;
    },
  };
}
