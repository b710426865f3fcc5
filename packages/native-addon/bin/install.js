#!/usr/bin/env node
// The install script of a package with a Node-API addon: `"install": "sysbox-native-addon-install
// <file>.node"` in its package.json (npm runs it in the package's folder). Where the prebuilt addon
// for this platform (prebuilds/<platform>-<arch>/<file>: linux-x64, glibc >= 2.28) loads, there is
// nothing to do. Elsewhere it compiles the package's binding.gyp with node-gyp into build/Release/,
// and where that cannot work it says what is missing and fails the install. Plain JavaScript with no
// dependency: it runs before anything is built.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, delimiter, join } from 'node:path';

const file = process.argv[2];
if (!file || basename(file) !== file || !file.endsWith('.node')) {
  console.error('usage: sysbox-native-addon-install <addon>.node (run in the package folder)');
  process.exit(2);
}
const pkg = process.cwd();
const name = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')).name;
const platform = `${process.platform}-${process.arch}`;
const prebuilt = join(pkg, 'prebuilds', platform, file);

let why = `no prebuilt ${file} for ${platform}`;
if (existsSync(prebuilt)) {
  try {
    createRequire(join(pkg, 'package.json'))(prebuilt);
    process.exit(0);
  } catch (err) {
    why = `the prebuilt ${file} for ${platform} does not load here (${String(err?.message).split('\n')[0]})`;
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
    `${name}: ${why}, and it cannot be compiled here: missing ${missing.map(([cmd, what]) => `${what} (${cmd})`).join(', ')}. ` +
      `Install them (Debian/Ubuntu: apt-get install build-essential python3) and run \`npm rebuild ${name}\`, ` +
      'or install on linux-x64 with glibc >= 2.28, where the prebuilt addon loads.',
  );
  process.exit(1);
}

console.error(`${name}: ${why}; compiling it with node-gyp`);
// npm puts its own node-gyp on PATH for install scripts and names it in npm_config_node_gyp.
const gyp = process.env.npm_config_node_gyp;
const run = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: pkg, stdio: 'inherit' })
  : spawnSync('node-gyp', ['rebuild'], { cwd: pkg, stdio: 'inherit' });
if (run.status !== 0) {
  console.error(
    `${name}: ${why}, and node-gyp failed (${run.error?.message ?? `exit ${run.status}`}): see its output above ` +
      '(it needs a C compiler, make, python3 and the Node headers, which it downloads unless npm_config_nodedir names them).',
  );
  process.exit(1);
}
