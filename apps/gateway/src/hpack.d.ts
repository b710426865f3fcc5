/** The part of hpack.js (RFC 7541, no types of its own) that authority-rewrite.ts uses. */
declare module 'hpack.js' {
  import type { Duplex } from 'node:stream';

  export interface HpackHeader {
    name: string;
    value: string;
    neverIndex?: boolean;
    /** false: a literal without indexing (the peer's dynamic table is left alone). */
    incremental?: boolean;
    huffman?: boolean;
  }
  export interface TableOptions {
    table: { maxSize: number };
  }
  export interface Decompressor extends Duplex {
    write(chunk: Buffer): boolean;
    execute(): void;
    read(): HpackHeader | null;
  }
  export interface Compressor extends Duplex {
    write(headers: HpackHeader[]): boolean;
    read(): Buffer | null;
  }
  const hpack: {
    decompressor: { create(options: TableOptions): Decompressor };
    compressor: { create(options: TableOptions): Compressor };
  };
  export default hpack;
}
