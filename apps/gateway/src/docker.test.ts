import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerAutoRemove } from './docker.js';

/** The Engine API's documented `GET /containers/{id}/json`, trimmed to what matters here. */
describe('dockerAutoRemove', () => {
  let dir: string;
  let socket: string;
  let server: Server;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'docker-api-'));
    socket = join(dir, 'docker.sock');
    server = createServer((req, res) => {
      const m = /^\/containers\/([^/]+)\/json$/.exec(req.url ?? '');
      const id = m ? decodeURIComponent(m[1]!) : '';
      if (id !== 'rm1' && id !== 'keep1') {
        res
          .writeHead(404, { 'Content-Type': 'application/json' })
          .end(JSON.stringify({ message: `No such container: ${id}` }));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(
        JSON.stringify({
          Id: id,
          Name: `/${id}`,
          HostConfig: { AutoRemove: id === 'rm1', NetworkMode: 'bridge' },
        }),
      );
    });
    await new Promise<void>((r) => server.listen(socket, r));
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers HostConfig.AutoRemove of the container', async () => {
    expect(await dockerAutoRemove('rm1', socket)).toBe(true);
    expect(await dockerAutoRemove('keep1', socket)).toBe(false);
  });

  it('answers false for an unknown container and for a missing socket', async () => {
    expect(await dockerAutoRemove('nope', socket)).toBe(false);
    expect(await dockerAutoRemove('rm1', join(dir, 'absent.sock'))).toBe(false);
  });
});
