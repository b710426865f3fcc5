/**
 * The trust boundary as a local user meets it: the whole system runs as root with authentication
 * on, and an unprivileged uid (setpriv) tries what an open bus allowed: connect, read the
 * credentials, call mutating subjects with the read-only identity, and, holding a service's own
 * key, read or write another service's state, delete buckets and answer in another's place. A
 * root-owned decoy tree (a secret and a setuid file) must stay exactly as it was.
 */
import {
  chmodSync,
  chownSync,
  copyFileSync,
  cpSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  GATEWAY_BUCKET,
  inboxPrefixOf,
  subidService,
  volPrep,
  volService,
  rootfsShiftUpper,
  subidAlloc,
  volList,
} from '@sysbox-mgr-ts/contracts';
import { jetstreamManager } from '@nats-io/jetstream';
import { run } from '@sysbox-mgr-ts/exec';
import { repoRoot, startSystem, type System } from './harness.js';

const NOBODY = 65534;

interface ProbeStep {
  request?: string;
  body?: string;
  subscribe?: string;
  kvGet?: { bucket: string; key: string };
  kvPut?: { bucket: string; key: string; value: string };
}
interface ProbeResult {
  readSeed?: string;
  connect: string;
  steps: { step: ProbeStep; ok: boolean; data?: string }[];
}

describe('an unprivileged local user against the authenticated system', () => {
  let sys: System;
  let probeDir: string;
  let decoy: string;
  let decoyBefore: Record<string, string>;

  /** Owner, group and mode of every entry under the decoy. */
  const snapshot = (root: string): Record<string, string> => {
    const out: Record<string, string> = {};
    const walk = (p: string): void => {
      const st = lstatSync(p);
      out[p] = `${st.uid}:${st.gid}:${(st.mode & 0o7777).toString(8)}`;
      if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    };
    walk(root);
    return out;
  };

  /** Runs the probe as uid/gid 65534 with a plan. */
  const probe = async (plan: {
    seedFile?: string;
    inboxPrefix?: string;
    steps: ProbeStep[];
  }): Promise<ProbeResult> => {
    const r = await run(
      'setpriv',
      [
        '--reuid',
        String(NOBODY),
        '--regid',
        String(NOBODY),
        '--clear-groups',
        '--',
        process.execPath,
        join(probeDir, 'nats-probe.mjs'),
        JSON.stringify({ url: sys.nats.url, ...plan }),
      ],
      { timeout: 30_000, cwd: probeDir },
    );
    return JSON.parse(r.stdout) as ProbeResult;
  };

  /** A copy of an identity's seed that the unprivileged user owns (as if it had stolen one). */
  const stolenSeed = (identity: 'monitor' | 'vol-mgr'): string => {
    const file = join(probeDir, `${identity}.nk`);
    copyFileSync(sys.credentials(identity).seedFile, file);
    chownSync(file, NOBODY, NOBODY);
    chmodSync(file, 0o600);
    return file;
  };

  beforeAll(async () => {
    sys = await startSystem();
    // A world-readable copy of the probe and the NATS client it imports: the repository may sit
    // under a directory the unprivileged user cannot enter.
    probeDir = mkdtempSync(join(tmpdir(), 'nats-probe-'));
    chmodSync(probeDir, 0o755);
    copyFileSync(join(repoRoot, 'e2e', 'fixtures', 'nats-probe.mjs'), join(probeDir, 'nats-probe.mjs'));
    mkdirSync(join(probeDir, 'node_modules'));
    for (const pkg of ['@nats-io', 'tweetnacl']) {
      cpSync(join(repoRoot, 'node_modules', pkg), join(probeDir, 'node_modules', pkg), {
        recursive: true,
        dereference: true,
      });
    }
    await run('chmod', ['-R', 'a+rX', probeDir], { timeout: 10_000 });

    decoy = join(sys.dir, 'decoy');
    mkdirSync(decoy, { mode: 0o755 });
    writeFileSync(join(decoy, 'secret'), 'root only\n', { mode: 0o600 });
    copyFileSync('/bin/true', join(decoy, 'tool'));
    chmodSync(join(decoy, 'tool'), 0o4755);
    decoyBefore = snapshot(decoy);
  });
  afterAll(async () => {
    if (probeDir) rmSync(probeDir, { recursive: true, force: true });
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  it('without credentials: no connection, and the credentials themselves cannot be read', async () => {
    showLogs();
    const r = await probe({ seedFile: sys.credentials('operator').seedFile, steps: [] });
    expect(r.readSeed).toMatch(/EACCES/);
    expect(r.connect).toMatch(/Authorization Violation/);
  });

  it('with the monitor identity: discovery and lists, but no mutating subject', async () => {
    showLogs();
    const prep = JSON.stringify({
      id: 'c1',
      uid: NOBODY,
      gid: NOBODY,
      sources: [{ source: decoy, exclusive: true }],
    });
    const r = await probe({
      seedFile: stolenSeed('monitor'),
      inboxPrefix: inboxPrefixOf('monitor'),
      steps: [
        { request: volList.subject(sys.node), body: '{}' },
        { request: `$SRV.INFO.${volService.name}`, body: '' },
        { request: volPrep.subject(sys.node), body: prep },
        {
          request: rootfsShiftUpper.subject(sys.node),
          body: JSON.stringify({ id: 'c1', upperDir: decoy, uidOffset: -NOBODY, gidOffset: 0 }),
        },
        { request: subidAlloc.subject(sys.node), body: '{"id":"c1","size":65536}' },
        { subscribe: `${inboxPrefixOf('gateway')}.>` },
      ],
    });
    expect(r.connect).toBe('ok');
    const [list, info, ...refused] = r.steps;
    expect(list).toMatchObject({ ok: true });
    expect(JSON.parse(list!.data!)).toHaveProperty('volumes');
    expect(JSON.parse(info!.data!)).toMatchObject({ name: volService.name });
    for (const s of refused)
      expect(s, JSON.stringify(s.step)).toMatchObject({
        ok: false,
        data: expect.stringMatching(/Permissions Violation/),
      });
  });

  it("with a service's own key: no other service's state, no bucket deleted, no answering in another's place", async () => {
    showLogs();
    const r = await probe({
      seedFile: stolenSeed('vol-mgr'),
      inboxPrefix: inboxPrefixOf('vol-mgr'),
      steps: [
        { kvGet: { bucket: GATEWAY_BUCKET, key: `${sys.node}.c1` } },
        { kvPut: { bucket: subidService.bucket, key: `${sys.node}.table`, value: '{}' } },
        { request: `$JS.API.STREAM.DELETE.KV_${GATEWAY_BUCKET}` },
        { request: `$JS.API.STREAM.DELETE.KV_${volService.bucket}` },
        { request: `$JS.API.STREAM.PURGE.KV_${subidService.bucket}` },
        // Deleting a record removes one message of the service's own stream (#25): never of
        // another's, and never a purge, of its own stream either.
        { request: `$JS.API.STREAM.MSG.DELETE.KV_${GATEWAY_BUCKET}`, body: '{"seq":1,"no_erase":true}' },
        { request: `$JS.API.STREAM.MSG.DELETE.KV_${subidService.bucket}`, body: '{"seq":1,"no_erase":true}' },
        { request: `$JS.API.STREAM.PURGE.KV_${volService.bucket}`, body: '{}' },
        { request: '$JS.API.STREAM.NAMES', body: '{}' },
        { subscribe: subidAlloc.subject(sys.node) },
        { subscribe: `${inboxPrefixOf('gateway')}.>` },
        { request: volPrep.subject(sys.node), body: '{}' },
      ],
    });
    expect(r.connect).toBe('ok');
    for (const s of r.steps)
      expect(s, JSON.stringify(s.step)).toMatchObject({
        ok: false,
        data: expect.stringMatching(/Permissions Violation/),
      });
    // Every bucket is still there.
    const names: string[] = [];
    for await (const name of (await jetstreamManager(sys.nc)).streams.names()) names.push(name);
    expect(names).toEqual(
      expect.arrayContaining([
        `KV_${GATEWAY_BUCKET}`,
        `KV_${volService.bucket}`,
        `KV_${subidService.bucket}`,
      ]),
    );
  });

  it('the root-owned decoy tree is untouched', () => {
    expect(snapshot(decoy)).toEqual(decoyBefore);
  });
});
