#!/usr/bin/env node
// Part of the nx build (not shipped): copies the addon node-gyp just compiled into
// prebuilds/linux-x64/, the binary the package ships and loads first, when this host is linux-x64
// with glibc (the platform the prebuilt covers) and the binary changed. The build is reproducible
// (same compiler, same bytes), so an unchanged source leaves the committed file untouched.
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const built = fileURLToPath(new URL('../build/Release/host_native.node', import.meta.url));
const dir = fileURLToPath(new URL('../prebuilds/linux-x64/', import.meta.url));
const glibc = process.report.getReport().header.glibcVersionRuntime;
if (process.platform !== 'linux' || process.arch !== 'x64' || !glibc) {
  console.log(`host-native prebuild: ${process.platform}-${process.arch}${glibc ? '' : ' without glibc'} is not the prebuilt platform; prebuilds/ left as is`);
} else if (!existsSync(`${dir}host_native.node`) || !readFileSync(built).equals(readFileSync(`${dir}host_native.node`))) {
  mkdirSync(dir, { recursive: true });
  copyFileSync(built, `${dir}host_native.node`);
  console.log(`host-native prebuild: updated prebuilds/linux-x64/host_native.node (glibc ${glibc})`);
}
