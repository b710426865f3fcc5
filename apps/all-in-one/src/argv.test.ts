import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { boolOption, option } from '@sysbox-mgr-ts/service-kit';
import { configure } from './all-in-one.js';
import { splitArgv } from './argv.js';

const own = { only: option({ flag: 'only', description: '', schema: z.string().optional() }) };
const a = {
  dataRoot: option({ flag: 'data-root', description: '', schema: z.string() }),
  sync: boolOption('sync', undefined, ''),
};
const b = {
  dataRoot: option({ flag: 'data-root', description: '', schema: z.string() }),
  socket: option({ flag: 'socket', description: '', schema: z.string() }),
};

describe('splitArgv', () => {
  it('gives a flag to every app that declares it, with its value, and keeps its own flags', () => {
    const r = splitArgv(['--only', 'x,y', '--data-root', '/d', '--no-sync', '--socket=/s'], own, [a, b]);
    expect(r.own).toEqual(['--only', 'x,y']);
    expect(r.perApp).toEqual([
      ['--data-root', '/d', '--no-sync'],
      ['--data-root', '/d', '--socket=/s'],
    ]);
    expect(r.unknown).toEqual([]);
  });
  it('reports flags nobody declares', () => {
    expect(splitArgv(['--bogus', '1', 'stray'], own, [a]).unknown).toEqual(['--bogus', '1', 'stray']);
  });
});

describe('configure', () => {
  it('parses each chosen app with its own options, shared flags to all', () => {
    const plan = configure(
      [
        '--only',
        'vol-mgr,rootfs-cloner',
        '--data-root',
        '/srv/sysbox',
        '--mount-timeout-ms',
        '5000',
        '--node',
        'h1',
      ],
      {},
    );
    expect(plan.apps.map((x) => x.name)).toEqual(['vol-mgr', 'rootfs-cloner']);
    expect(plan.apps.map((x) => x.config.dataRoot)).toEqual(['/srv/sysbox', '/srv/sysbox']);
    expect(plan.apps[1]!.config.mountTimeoutMs).toBe(5000);
    expect(plan.apps[0]!.config).not.toHaveProperty('mountTimeoutMs');
  });
  it('refuses a flag that none of the chosen apps takes, naming it', () => {
    expect(() => configure(['--only', 'vol-mgr', '--socket', '/s'], {})).toThrow(/unknown option --socket/);
  });
  it('refuses an app that does not exist', () => {
    expect(() => configure(['--only', 'vol-mgr,nope'], {})).toThrow(/only/);
  });
});
