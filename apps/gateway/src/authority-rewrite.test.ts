/**
 * The frame rewriter on bytes: a client's HPACK encoder (hpack.js with incremental indexing, as
 * grpc-go's) makes the header blocks; a fresh server-side decoder reads what comes out.
 */
import { describe, expect, it } from 'vitest';
import {
  hpack,
  type HpackHeader,
  Http2FrameError,
  PREFACE_LENGTH,
  REPLACEMENT_AUTHORITY,
  authorityAccepted,
  createAuthorityRewriter,
} from './authority-rewrite.js';
import { http2Frame } from '../test/test-support.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const HEADERS = 0x1;
const DATA = 0x0;
const SETTINGS = 0x4;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
const SOCKET = '/run/sysbox/sysmgr.sock';

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

function parseFrames(buf: Buffer): Frame[] {
  expect(buf.subarray(0, PREFACE_LENGTH)).toEqual(PREFACE);
  const out: Frame[] = [];
  for (let at = PREFACE_LENGTH; at < buf.length;) {
    const length = buf.readUIntBE(at, 3);
    out.push({
      type: buf[at + 3]!,
      flags: buf[at + 4]!,
      stream: buf.readUInt32BE(at + 5),
      payload: buf.subarray(at + 9, at + 9 + length),
    });
    at += 9 + length;
  }
  return out;
}

/** A client: its own encoder, whose dynamic table later requests refer to. */
function client() {
  const enc = hpack.compressor.create({ table: { maxSize: 4096 } });
  return (headers: [string, string][]): Buffer => {
    enc.write(headers.map(([name, value]) => ({ name, value })));
    return enc.read()!;
  };
}

function request(path: string, authority: string, extra: [string, string][] = []): [string, string][] {
  return [
    [':method', 'POST'],
    [':scheme', 'http'],
    [':path', path],
    [':authority', authority],
    ['content-type', 'application/grpc'],
    ['user-agent', 'grpc-go/1.33.3'],
    ['te', 'trailers'],
    ['grpc-timeout', '9999993u'],
    ...extra,
  ];
}

/** The server's view: header blocks of the output decoded in order by one decoder. */
function serverView(frames: Frame[]): { stream: number; flags: number; headers: [string, string][] }[] {
  const dec = hpack.decompressor.create({ table: { maxSize: 4096 } });
  const blocks: { stream: number; flags: number; headers: [string, string][] }[] = [];
  let parts: Buffer[] = [];
  let first: Frame | undefined;
  for (const f of frames) {
    if (f.type !== HEADERS && f.type !== CONTINUATION) continue;
    if (f.type === HEADERS) {
      first = f;
      expect(f.flags & PADDED).toBe(0);
      parts = [f.flags & PRIORITY ? f.payload.subarray(5) : f.payload];
    } else parts.push(f.payload);
    expect(f.payload.length).toBeLessThanOrEqual(16_384);
    if (f.flags & END_HEADERS) {
      dec.write(Buffer.concat(parts));
      dec.execute();
      const headers: [string, string][] = [];
      for (let h: HpackHeader | null = dec.read(); h; h = dec.read()) headers.push([h.name, h.value]);
      blocks.push({ stream: first!.stream, flags: first!.flags, headers });
    }
  }
  return blocks;
}

function run(chunks: Buffer[]): { out: Buffer; mode: string; refused: string | undefined } {
  const r = createAuthorityRewriter();
  const out = Buffer.concat(chunks.flatMap((c) => r.push(c)));
  return { out, mode: r.mode, refused: r.refused };
}

function splitEvery(buf: Buffer, n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += n) out.push(buf.subarray(i, i + n));
  return out;
}

const replaced = (h: [string, string][]): [string, string][] =>
  h.map(([n, v]) => [n, n === ':authority' ? REPLACEMENT_AUTHORITY : v]);

describe('authority rewrite', () => {
  it('accepts what nghttp2 accepts, refuses a socket path', () => {
    expect(authorityAccepted('localhost')).toBe(true);
    expect(authorityAccepted('%2Frun%2Fsysbox%2Fsysmgr.sock')).toBe(true);
    expect(authorityAccepted('[::1]:50051')).toBe(true);
    expect(authorityAccepted(SOCKET)).toBe(false);
    expect(authorityAccepted('a b')).toBe(false);
  });

  it('passes a connection whose first authority is accepted byte for byte, in any chunking', () => {
    const enc = client();
    const wire = Buffer.concat([
      PREFACE,
      http2Frame(SETTINGS, 0, 0, Buffer.alloc(6)),
      http2Frame(HEADERS, END_HEADERS, 1, enc(request('/p.S/Register', 'localhost'))),
      http2Frame(DATA, END_STREAM, 1, Buffer.from('00000000026869', 'hex')),
      http2Frame(HEADERS, END_HEADERS, 3, enc(request('/p.S/Update', 'localhost'))),
    ]);
    for (const n of [1, 7, 24, 50, wire.length]) {
      const r = run(splitEvery(wire, n));
      expect(r.out).toEqual(wire);
      expect(r.mode).toBe('pass');
      expect(r.refused).toBeUndefined();
    }
  });

  it("rewrites every header block of a refused connection, following the client's dynamic table across requests", () => {
    const enc = client();
    const reqs = [
      request('/protobuf.sysboxMgrStateChannel/Register', SOCKET),
      request('/protobuf.sysboxMgrStateChannel/SubidAlloc', SOCKET),
      request('/protobuf.sysboxMgrStateChannel/SubidAlloc', SOCKET, [['x-trace', 'abc']]),
      request('/protobuf.sysboxMgrStateChannel/Unregister', SOCKET, [['x-trace', 'abc']]),
    ];
    const blocks = reqs.map((h) => enc(h));
    // The later blocks are mostly indices into the client's dynamic table.
    expect(blocks[2]!.length).toBeLessThan(blocks[0]!.length / 2);
    const data = http2Frame(DATA, END_STREAM, 1, Buffer.from('0000000002080a', 'hex'));
    const wire = Buffer.concat([
      PREFACE,
      http2Frame(SETTINGS, 0, 0, Buffer.alloc(0)),
      ...blocks.flatMap((b, i) => [http2Frame(HEADERS, END_HEADERS, 2 * i + 1, b), data]),
    ]);
    for (const n of [1, 3, 9, 64, wire.length]) {
      const r = run(splitEvery(wire, n));
      expect(r.mode).toBe('rewrite');
      expect(r.refused).toBe(SOCKET);
      const frames = parseFrames(r.out);
      const view = serverView(frames);
      expect(view.map((b) => b.headers)).toEqual(reqs.map(replaced));
      expect(view.map((b) => b.stream)).toEqual([1, 3, 5, 7]);
      // Other frames pass as they were.
      expect(
        frames.filter((f) => f.type === DATA).map((f) => http2Frame(f.type, f.flags, f.stream, f.payload)),
      ).toEqual([data, data, data, data]);
      expect(frames[0]).toMatchObject({ type: SETTINGS, payload: Buffer.alloc(0) });
    }
  });

  it('gathers a big header block split in CONTINUATION frames and splits it again within 16 KiB frames', () => {
    const enc = client();
    const big = 'v'.repeat(40_000);
    const headers = request('/p.S/ReqMounts', SOCKET, [['x-big', big]]);
    const block = enc(headers);
    const parts = splitEvery(block, 10_000);
    const wire = Buffer.concat([
      PREFACE,
      http2Frame(HEADERS, END_STREAM, 1, parts[0]!),
      ...parts
        .slice(1)
        .map((p, i) => http2Frame(CONTINUATION, i === parts.length - 2 ? END_HEADERS : 0, 1, p)),
    ]);
    const r = run(splitEvery(wire, 4096));
    const frames = parseFrames(r.out);
    expect(frames.map((f) => f.type)).toEqual([HEADERS, CONTINUATION, CONTINUATION]);
    expect(frames.map((f) => f.flags & END_HEADERS)).toEqual([0, 0, END_HEADERS]);
    expect(frames[0]!.flags & END_STREAM).toBe(END_STREAM);
    expect(serverView(frames).map((b) => b.headers)).toEqual([replaced(headers)]);
  });

  it('drops padding and keeps the priority fields and END_STREAM of a padded, prioritized HEADERS', () => {
    const enc = client();
    const headers = request('/p.S/Pause', SOCKET);
    const prio = Buffer.from([0x80, 0, 0, 3, 200]);
    const pad = Buffer.alloc(17, 0);
    const payload = Buffer.concat([Buffer.from([pad.length]), prio, enc(headers), pad]);
    const wire = Buffer.concat([
      PREFACE,
      http2Frame(HEADERS, PADDED | PRIORITY | END_HEADERS | END_STREAM, 5, payload),
    ]);
    const frames = parseFrames(run([wire]).out);
    expect(frames).toHaveLength(1);
    expect(frames[0]!.flags).toBe(PRIORITY | END_HEADERS | END_STREAM);
    expect(frames[0]!.payload.subarray(0, 5)).toEqual(prio);
    expect(serverView(frames)).toEqual([
      { stream: 5, flags: PRIORITY | END_HEADERS | END_STREAM, headers: replaced(headers) },
    ]);
  });

  it('streams a large DATA frame through as it comes, holding nothing back', () => {
    const enc = client();
    const r = createAuthorityRewriter();
    r.push(Buffer.concat([PREFACE, http2Frame(HEADERS, END_HEADERS, 1, enc(request('/p.S/X', SOCKET)))]));
    const body = Buffer.alloc(20_000, 7);
    const data = http2Frame(DATA, END_STREAM, 1, body);
    const out = splitEvery(data, 1000).map((c) => Buffer.concat(r.push(c)));
    expect(out.every((o, i) => o.length === Math.min(1000, data.length - i * 1000))).toBe(true);
    expect(Buffer.concat(out)).toEqual(data);
  });

  it('refuses what is not HTTP/2 framing: a CONTINUATION alone, a frame inside a header block, bad HPACK', () => {
    const cont = Buffer.concat([PREFACE, http2Frame(CONTINUATION, END_HEADERS, 1, Buffer.from([0x82]))]);
    expect(() => run([cont])).toThrow(Http2FrameError);
    const inside = Buffer.concat([
      PREFACE,
      http2Frame(HEADERS, 0, 1, Buffer.from([0x82])),
      http2Frame(DATA, 0, 1, Buffer.alloc(1)),
    ]);
    expect(() => run([inside])).toThrow(Http2FrameError);
    // Index 126 of an empty dynamic table.
    const bad = Buffer.concat([PREFACE, http2Frame(HEADERS, END_HEADERS, 1, Buffer.from([0xfe]))]);
    expect(() => run([bad])).toThrow(/bad HPACK/);
  });
  it("takes out the client's ACK of the front's own SETTINGS, and passes everything after it", () => {
    const enc = client();
    const ack = http2Frame(SETTINGS, 0x1, 0, Buffer.alloc(0));
    const first = http2Frame(HEADERS, END_HEADERS, 1, enc(request('/a', 'localhost')));
    const second = http2Frame(HEADERS, END_HEADERS, 3, enc(request('/b', 'localhost')));
    const settings = http2Frame(SETTINGS, 0, 0, Buffer.alloc(0));
    for (const order of [
      [settings, ack, first, second, ack],
      [settings, first, ack, second, ack],
    ]) {
      const r = createAuthorityRewriter({ ownSettingsSent: true });
      const out: Buffer[] = [];
      // One byte at a time: the ACK is found across chunks too.
      for (const b of Buffer.concat([PREFACE, ...order])) {
        out.push(...r.push(Buffer.from([b])));
        if (r.mode === 'pass') break;
      }
      expect(r.mode).toBe('pass');
      const rest = Buffer.concat([PREFACE, ...order]).subarray(Buffer.concat(out).length + 9);
      // Everything but the first ACK, in order; a later ACK (of the server's SETTINGS) stays.
      const all = Buffer.concat([...out, ...r.push(rest)]);
      const want = [...order];
      want.splice(order.indexOf(ack), 1);
      expect(all).toEqual(Buffer.concat([PREFACE, ...want]));
    }
  });

  it('waits for the ACK before passing, and rewrites as before when the authority is refused', () => {
    const enc = client();
    const r = createAuthorityRewriter({ ownSettingsSent: true });
    const out = r.push(
      Buffer.concat([PREFACE, http2Frame(HEADERS, END_HEADERS, 1, enc(request('/a', 'localhost')))]),
    );
    expect(r.mode).toBe('accepted');
    expect(Buffer.concat(out).length).toBeGreaterThan(PREFACE_LENGTH);
    r.push(http2Frame(SETTINGS, 0x1, 0, Buffer.alloc(0)));
    expect(r.mode).toBe('pass');

    const refused = createAuthorityRewriter({ ownSettingsSent: true });
    const enc2 = client();
    const got = Buffer.concat([
      ...refused.push(Buffer.concat([PREFACE, http2Frame(SETTINGS, 0x1, 0, Buffer.alloc(0))])),
      ...refused.push(http2Frame(HEADERS, END_HEADERS, 1, enc2(request('/a', SOCKET)))),
    ]);
    expect(refused.mode).toBe('rewrite');
    const frames = parseFrames(got);
    expect(frames.some((f) => f.type === SETTINGS)).toBe(false);
    expect(serverView(frames)[0]!.headers).toContainEqual([':authority', REPLACEMENT_AUTHORITY]);
  });
});
