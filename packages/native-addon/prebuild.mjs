#!/usr/bin/env node
// Part of the nx build of the packages with a C addon (not shipped), run in the package's folder
// with the addon's file name: `node ../native-addon/prebuild.mjs id_shift.node`.
// Copies the addon node-gyp just compiled into prebuilds/linux-x64/, the binary the package ships
// and loads first, when this host is linux-x64 with glibc (the platform the prebuilt covers) and
// the binary changed. The build is reproducible (same compiler, same bytes), so an unchanged source
// leaves the committed file untouched.
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { basename, join } from 'node:path';

const addon = process.argv[2];
if (!addon || basename(addon) !== addon || !addon.endsWith('.node')) {
  console.error('usage: prebuild.mjs <addon>.node (run in the package folder)');
  process.exit(2);
}
const pkg = JSON.parse(readFileSync('package.json', 'utf8')).name;
const built = join('build', 'Release', addon);
const dir = join('prebuilds', 'linux-x64');
const shipped = join(dir, addon);
const glibc = process.report.getReport().header.glibcVersionRuntime;
if (process.platform !== 'linux' || process.arch !== 'x64' || !glibc) {
  console.log(
    `${pkg} prebuild: ${process.platform}-${process.arch}${glibc ? '' : ' without glibc'} is not the prebuilt platform; prebuilds/ left as is`,
  );
} else if (!existsSync(shipped) || !readFileSync(built).equals(readFileSync(shipped))) {
  mkdirSync(dir, { recursive: true });
  // A new file renamed over the old one: processes that have the old one loaded (daemons and tests
  // running from this checkout) keep their mapping, where overwriting it in place crashes them.
  copyFileSync(built, `${shipped}.tmp`);
  renameSync(`${shipped}.tmp`, shipped);
  console.log(`${pkg} prebuild: updated ${shipped} (glibc ${glibc})`);
}
