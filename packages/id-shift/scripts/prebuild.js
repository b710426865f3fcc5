#!/usr/bin/env node
// Part of the nx build (not shipped): copies the addon node-gyp just compiled into
// prebuilds/linux-x64/, the binary the package ships and loads first, when this host is linux-x64
// with glibc (the platform the prebuilt covers) and the binary changed. The build is reproducible
// (same compiler, same bytes), so an unchanged source leaves the committed file untouched.
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const built = fileURLToPath(new URL('../build/Release/id_shift.node', import.meta.url));
const dir = fileURLToPath(new URL('../prebuilds/linux-x64/', import.meta.url));
const glibc = process.report.getReport().header.glibcVersionRuntime;
if (process.platform !== 'linux' || process.arch !== 'x64' || !glibc) {
  console.log(`id-shift prebuild: ${process.platform}-${process.arch}${glibc ? '' : ' without glibc'} is not the prebuilt platform; prebuilds/ left as is`);
} else if (!existsSync(`${dir}id_shift.node`) || !readFileSync(built).equals(readFileSync(`${dir}id_shift.node`))) {
  mkdirSync(dir, { recursive: true });
  // A new file renamed over the old one: processes that have the old one loaded (daemons and tests
  // running from this checkout) keep their mapping, where overwriting it in place crashes them.
  copyFileSync(built, `${dir}id_shift.node.tmp`);
  renameSync(`${dir}id_shift.node.tmp`, `${dir}id_shift.node`);
  console.log(`id-shift prebuild: updated prebuilds/linux-x64/id_shift.node (glibc ${glibc})`);
}
