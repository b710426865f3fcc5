#!/usr/bin/env node
// npm's install script for @sysbox-mgr-ts/host-native. Where the prebuilt addon for this platform
// (prebuilds/<platform>-<arch>/host_native.node: linux-x64, glibc >= 2.28) loads, there is nothing to
// do. Elsewhere it compiles native/host_native.c with node-gyp into build/Release/, and where that
// cannot work it says what is missing and fails the install.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const platform = `${process.platform}-${process.arch}`;
const prebuilt = join(pkg, 'prebuilds', platform, 'host_native.node');

let why = `no prebuilt addon for ${platform}`;
if (existsSync(prebuilt)) {
  try {
    createRequire(import.meta.url)(prebuilt);
    process.exit(0);
  } catch (err) {
    why = `the prebuilt addon for ${platform} does not load here (${String(err?.message).split('\n')[0]})`;
  }
}

const onPath = (cmd) =>
  (process.env.PATH ?? '').split(delimiter).some((dir) => dir && existsSync(join(dir, cmd)));
const cc = (process.env.CC || 'cc').trim().split(/\s+/)[0];
const missing = [
  [cc, 'a C compiler'],
  ['make', 'make'],
  ['python3', 'python3'],
].filter(([cmd]) => !(cmd.includes('/') ? existsSync(cmd) : onPath(cmd)));
if (missing.length > 0) {
  console.error(
    `@sysbox-mgr-ts/host-native: ${why}, and it cannot be compiled here: missing ${missing.map(([cmd, what]) => `${what} (${cmd})`).join(', ')}. ` +
      'Install them (Debian/Ubuntu: apt-get install build-essential python3) and run `npm rebuild @sysbox-mgr-ts/host-native`, ' +
      'or install on linux-x64 with glibc >= 2.28, where the prebuilt addon loads.',
  );
  process.exit(1);
}

console.error(`@sysbox-mgr-ts/host-native: ${why}; compiling native/host_native.c with node-gyp`);
// npm puts its own node-gyp on PATH for install scripts and names it in npm_config_node_gyp.
const gyp = process.env.npm_config_node_gyp;
const run = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: pkg, stdio: 'inherit' })
  : spawnSync('node-gyp', ['rebuild'], { cwd: pkg, stdio: 'inherit' });
if (run.status !== 0) {
  console.error(
    `@sysbox-mgr-ts/host-native: ${why}, and node-gyp failed (${run.error?.message ?? `exit ${run.status}`}): see its output above ` +
      '(it needs a C compiler, make, python3 and the Node headers, which it downloads unless npm_config_nodedir names them).',
  );
  process.exit(1);
}
