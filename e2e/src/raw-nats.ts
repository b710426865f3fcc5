/**
 * What a `nats req` user sees: a plain NATS protocol client over TCP (INFO, CONNECT signed with
 * an nkey as `nats --nkey` does, SUB, PUB with a reply inbox), no client library in between, so
 * the test shows the wire as operators meet it.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { nkeys } from '@nats-io/nats-core';

export interface RawCredentials {
  /** An nkey seed file (sysbox-nats-auth); left out, the client connects anonymously. */
  seedFile?: string;
  /** Inbox prefix the identity may subscribe to (`nats --inbox-prefix`). */
  inboxPrefix?: string;
}

export interface RawReply {
  headers: Record<string, string>;
  /** The status line of a headers block, e.g. "503" for no responders. */
  status: string | undefined;
  body: string;
}

export async function rawRequest(
  port: number,
  subject: string,
  payload: string,
  creds: RawCredentials = {},
  timeoutMs = 5000,
): Promise<RawReply> {
  const sock = connect(port, '127.0.0.1');
  try {
    const info = await readInfo(sock);
    const auth: Record<string, string> = {};
    if (creds.seedFile) {
      const kp = nkeys.fromSeed(new TextEncoder().encode(readFileSync(creds.seedFile, 'utf8').trim()));
      auth.nkey = kp.getPublicKey();
      auth.sig = Buffer.from(kp.sign(new TextEncoder().encode(String(info.nonce)))).toString('base64url');
    }
    const inbox = `${creds.inboxPrefix ?? '_INBOX'}.raw${Math.random().toString(36).slice(2)}`;
    const body = Buffer.from(payload);
    const options = {
      verbose: false,
      pedantic: false,
      headers: true,
      no_responders: true,
      protocol: 1,
      ...auth,
    };
    sock.write(
      `CONNECT ${JSON.stringify(options)}\r\nSUB ${inbox} 1\r\nPUB ${subject} ${inbox} ${body.length}\r\n`,
    );
    sock.write(Buffer.concat([body, Buffer.from('\r\n')]));
    return await readReply(sock, timeoutMs);
  } finally {
    sock.destroy();
  }
}

/** The server's first line: INFO with the nonce to sign. */
function readInfo(sock: Socket): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString();
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      sock.off('data', onData);
      resolve(JSON.parse(buf.slice(0, eol).replace(/^INFO /, '')) as Record<string, unknown>);
    };
    sock.on('data', onData);
    sock.once('error', reject);
  });
}

function readReply(sock: Socket, timeoutMs: number): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error('raw request timed out')), timeoutMs);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const eol = buf.indexOf('\r\n');
        if (eol < 0) return;
        const line = buf.subarray(0, eol).toString();
        if (line.startsWith('PING')) {
          sock.write('PONG\r\n');
          buf = buf.subarray(eol + 2);
          continue;
        }
        // MSG <subject> <sid> [reply] <#bytes>; HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>.
        // Counted by tokens: a regex with an optional reply token would take the header size for it.
        const tokens = line.split(' ');
        const kind = tokens[0] === 'MSG' || tokens[0] === 'HMSG' ? tokens[0] : undefined;
        if (!kind) {
          if (line.startsWith('-ERR')) {
            clearTimeout(timer);
            reject(new Error(line));
            return;
          }
          buf = buf.subarray(eol + 2);
          continue;
        }
        const total = Number(tokens[tokens.length - 1]);
        const hdrLen = kind === 'HMSG' ? Number(tokens[tokens.length - 2]) : 0;
        if (buf.length < eol + 2 + total + 2) return;
        const payload = buf.subarray(eol + 2, eol + 2 + total);
        const hdrText = payload.subarray(0, hdrLen).toString();
        const headers: Record<string, string> = {};
        let status: string | undefined;
        for (const [i, h] of hdrText.split('\r\n').entries()) {
          if (i === 0) status = /^NATS\/1\.0 ?(\d+)?/.exec(h)?.[1];
          else if (h.includes(':'))
            headers[h.slice(0, h.indexOf(':')).trim()] = h.slice(h.indexOf(':') + 1).trim();
        }
        clearTimeout(timer);
        resolve({ headers, status, body: payload.subarray(hdrLen).toString() });
        return;
      }
    });
  });
}
