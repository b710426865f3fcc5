import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { run } from '@sysbox-mgr-ts/exec';
import { afterEach, describe, expect, it } from 'vitest';
import { addonPath, loadAddon } from './index.js';

// A real addon to load: host-native's prebuilt binary, as a file (host-native depends on this package).
const realAddon = fileURLToPath(
  new URL(
    `../../host-native/prebuilds/${process.platform}-${process.arch}/host_native.node`,
    import.meta.url,
  ),
);
const installScript = fileURLToPath(new URL('../bin/install.js', import.meta.url));
const platformDir = `${process.platform}-${process.arch}`;
const roots: string[] = [];
let made = 0;

/** A package folder with the given addon files (`real` copies a loadable addon, `junk` writes bytes that do not load). */
async function fakePackage(files: { prebuilt?: 'real' | 'junk'; compiled?: 'real' | 'junk' }) {
  const root = await mkdtemp(join(tmpdir(), 'native-addon-'));
  roots.push(root);
  // A name of its own: the loader remembers what it found per package.
  const packageName = `@t/pkg-${++made}`;
  await writeFile(join(root, 'package.json'), JSON.stringify({ name: packageName }));
  const place = async (dir: string, kind: 'real' | 'junk' | undefined) => {
    if (!kind) return;
    await mkdir(dir, { recursive: true });
    if (kind === 'real') await copyFile(realAddon, join(dir, 'a.node'));
    else await writeFile(join(dir, 'a.node'), 'not an ELF file');
  };
  await place(join(root, 'prebuilds', platformDir), files.prebuilt);
  await place(join(root, 'build', 'Release'), files.compiled);
  return { root, at: { packageName, packageRoot: root, file: 'a.node' } };
}

afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

describe('addonPath and loadAddon', () => {
  it('takes the prebuilt binary first', async () => {
    const { root, at } = await fakePackage({ prebuilt: 'real', compiled: 'real' });
    expect(addonPath(at)).toBe(join(root, 'prebuilds', platformDir, 'a.node'));
    expect(typeof loadAddon<{ mount: unknown }>(at).mount).toBe('function');
  });

  it('falls back to the compiled one when the prebuilt is missing or does not load', async () => {
    for (const prebuilt of [undefined, 'junk'] as const) {
      const { root, at } = await fakePackage({ prebuilt, compiled: 'real' });
      expect(addonPath(at)).toBe(join(root, 'build', 'Release', 'a.node'));
    }
  });

  it('fails with unsupported, naming each path tried and how to compile', async () => {
    const { root, at } = await fakePackage({ prebuilt: 'junk' });
    const err = (() => {
      try {
        addonPath(at);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(SysboxError);
    expect(err).toMatchObject({ code: 'unsupported' });
    const message = (err as Error).message;
    expect(message).toContain(`${join(root, 'prebuilds', platformDir, 'a.node')} (`);
    expect(message).toContain(`${join(root, 'build', 'Release', 'a.node')} (missing)`);
    expect(message).toContain(`npm rebuild ${at.packageName}`);
  });
});

describe('the install script', () => {
  it('does nothing where the prebuilt binary loads', async () => {
    const { root } = await fakePackage({ prebuilt: 'real' });
    const r = await run(process.execPath, [installScript, 'a.node'], { cwd: root, timeout: 10_000 });
    expect(r.stderr).toBe('');
  });

  it('fails, naming what is missing, where nothing loads and nothing can compile', async () => {
    const { root } = await fakePackage({ prebuilt: 'junk' });
    const err = await run(process.execPath, [installScript, 'a.node'], {
      cwd: root,
      timeout: 10_000,
      env: { PATH: join(root, 'empty-bin'), CC: 'cc' },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SysboxError);
    expect((err as Error).message).toMatch(
      /does not load here.*missing a C compiler \(cc\), make \(make\), python3/,
    );
  });
});
