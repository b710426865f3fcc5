#!/usr/bin/env node
/**
 * Idle RSS of each daemon and of the all-in-one, started from their bins against an authenticated
 * test-nats server, as e2e/src/harness.ts starts them (same flags). For each app and run: start,
 * wait for `started`, wait IDLE_MS, read VmRSS (and a breakdown), stop. Prints medians.
 *
 *   node tools/rss/measure.mjs [--runs 5] [--idle-ms 3000] [--apps subid-allocator,gateway,...]
 *                              [--node-flags="--max-semi-space-size=1 ..."]   (run `node <flags> dist/main.js`
 *                                                                               instead of the bin)
 *                              [--env NAME=value ...] [--smaps] [--print-log]
 * Needs a build (`nx run-many -t build`) and nats-server on PATH.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';

const repoRoot = resolve(import.meta.dirname, '../..');
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    'idle-ms': { type: 'string', default: '3000' },
    apps: { type: 'string', default: 'subid-allocator,vol-mgr,shiftfs-mgr,rootfs-cloner,gateway,all-in-one' },
    'node-flags': { type: 'string' },
    json: { type: 'boolean', default: false },
    'print-log': { type: 'boolean', default: false },
    smaps: { type: 'boolean', default: false },
    env: { type: 'string', multiple: true, default: [] },
  },
});
const RUNS = Number(values.runs);
const IDLE_MS = Number(values['idle-ms']);
const APPS = values.apps.split(',');
const SPLIT = ['subid-allocator', 'vol-mgr', 'shiftfs-mgr', 'rootfs-cloner', 'gateway'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const kb = (text, key) => {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) / 1024 : NaN;
};
function sample(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const smaps = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return {
    rss: kb(status, 'VmRSS'),
    anon: kb(status, 'RssAnon'),
    file: kb(status, 'RssFile'),
    pss: kb(smaps, 'Pss'),
  };
}

/** Rss per mapping kind (file path or [anon]/[heap]/...), and the largest single mappings. */
function printSmaps(app, pid) {
  const maps = [];
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      maps.push({
        start: head[1],
        size: (parseInt(head[2], 16) - parseInt(head[1], 16)) / 1024,
        kind: `${head[4] || '[anon]'} ${head[3]}`,
        rss: 0,
      });
      continue;
    }
    const m = /^Rss:\s+(\d+) kB/.exec(line);
    if (m) maps.at(-1).rss = Number(m[1]);
  }
  const by = new Map();
  for (const m of maps) by.set(m.kind, (by.get(m.kind) ?? 0) + m.rss);
  console.log(`-- ${app} smaps: Rss MB by kind`);
  for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 8))
    console.log(`${(v / 1024).toFixed(1).padStart(6)}  ${k}`);
  console.log(`-- ${app} largest mappings: Rss kB / size kB`);
  for (const m of [...maps].sort((a, b) => b.rss - a.rss).slice(0, 10))
    console.log(`${String(m.rss).padStart(6)} / ${String(m.size).padStart(7)}  ${m.kind} @${m.start}`);
}

async function measureOnce(app) {
  const dir = mkdtempSync(join(tmpdir(), 'sysbox-rss-'));
  const node = `rss-${Math.random().toString(36).slice(2, 8)}`;
  const dataRoot = join(dir, 'data');
  const etcDir = join(dir, 'etc');
  mkdirSync(dataRoot);
  mkdirSync(etcDir);
  mkdirSync(join(dir, 'run'));
  const etc = {
    subuid: join(etcDir, 'subuid'),
    subgid: join(etcDir, 'subgid'),
    loginDefs: join(etcDir, 'login.defs'),
  };
  writeFileSync(etc.subuid, 'alice:100000:65536\n');
  writeFileSync(etc.subgid, 'alice:100000:65536\n');
  writeFileSync(
    etc.loginDefs,
    'SUB_UID_MIN 100000\nSUB_UID_MAX 600100000\nSUB_GID_MIN 100000\nSUB_GID_MAX 600100000\n',
  );
  const nats = await startNatsServer({ jetstream: true, auth: { nodes: [node] } });
  const subidFiles = ['--subuid-file', etc.subuid, '--subgid-file', etc.subgid];
  const guard = ['--allowed-rootfs-roots', dir, ...subidFiles];
  const own = {
    'subid-allocator': [
      '--subuid-file',
      etc.subuid,
      '--subgid-file',
      etc.subgid,
      '--login-defs',
      etc.loginDefs,
      '--mode',
      'exclusive',
      '--pool-size',
      String(64 * 65536),
    ],
    'vol-mgr': [...guard],
    'shiftfs-mgr': ['--no-modprobe'],
    'rootfs-cloner': [...guard],
    gateway: ['--socket', join(dir, 'run', 'sysmgr.sock'), '--watch-interval-ms', '50', ...subidFiles],
  };
  const creds =
    app === 'all-in-one'
      ? ['--creds-dir', dirname(nats.credentials('operator'))]
      : ['--nats-creds', nats.credentials(app)];
  const args = [
    '--nats-url',
    nats.url,
    ...creds,
    '--node',
    node,
    '--data-root',
    dataRoot,
    '--log-level',
    'info',
    ...(app === 'all-in-one' ? SPLIT : [app]).flatMap((a) => own[a]),
  ];
  // The app's one bin, as its package.json names it.
  const bins = JSON.parse(readFileSync(join(repoRoot, 'apps', app, 'package.json'), 'utf8')).bin;
  const bin = join(repoRoot, 'apps', app, Object.values(bins)[0]);
  const logFile = join(dir, 'log');
  const out = openSync(logFile, 'w');
  const cmd =
    values['node-flags'] !== undefined
      ? [
          process.execPath,
          [
            ...values['node-flags'].split(/\s+/).filter(Boolean),
            join(repoRoot, 'apps', app, 'dist', 'main.js'),
            ...args,
          ],
        ]
      : [bin, args];
  const env = {
    ...process.env,
    ...Object.fromEntries(values.env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
  };
  const child = spawn(cmd[0], cmd[1], { stdio: ['ignore', out, out], env });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    const ready = app === 'all-in-one' ? /"apps":\[[^\]]*\],"msg":"started"/ : /"msg":"started"/;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${app} exited:\n${readFileSync(logFile, 'utf8')}`);
      if (ready.test(readFileSync(logFile, 'utf8'))) break;
      if (Date.now() > deadline)
        throw new Error(`${app} not started in 20 s:\n${readFileSync(logFile, 'utf8')}`);
      await sleep(50);
    }
    await sleep(IDLE_MS);
    if (values.smaps) printSmaps(app, child.pid);
    if (values['print-log']) {
      await sleep(1000);
      console.log(
        readFileSync(logFile, 'utf8')
          .split('\n')
          .filter((l) => !l.startsWith('{'))
          .join('\n'),
      );
    }
    return sample(child.pid);
  } finally {
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000).then(() => child.kill('SIGKILL'))]);
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const results = {};
for (let run = 0; run < RUNS; run++) {
  for (const app of APPS) (results[app] ??= []).push(await measureOnce(app));
}
const rows = APPS.map((app) => {
  const rs = results[app];
  const med = (k) => median(rs.map((r) => r[k]));
  return {
    app,
    rss: med('rss'),
    anon: med('anon'),
    file: med('file'),
    pss: med('pss'),
    all: rs.map((r) => r.rss.toFixed(1)).join(' '),
  };
});
if (values.json) console.log(JSON.stringify(rows));
console.log(
  `runs ${RUNS}, idle ${IDLE_MS} ms, ${values['node-flags'] !== undefined ? `node ${values['node-flags']} dist/main.js` : 'bins'}`,
);
console.log('| app | VmRSS median MB | RssAnon | RssFile | Pss | runs |');
console.log('|---|---|---|---|---|---|');
for (const r of rows)
  console.log(
    `| ${r.app} | ${r.rss.toFixed(1)} | ${r.anon.toFixed(1)} | ${r.file.toFixed(1)} | ${r.pss.toFixed(1)} | ${r.all} |`,
  );
