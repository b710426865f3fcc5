import { describe, expect, it } from 'vitest';
import { alignRows, formatUptime } from './format.js';
import { buildReport, type InstanceStats, type NodeLists } from './report.js';

const NOW = Date.parse('2026-12-07T12:00:00.000Z');

const instance = (
  service: string,
  node: string,
  started: string,
  id = `${service}-${node}`,
): InstanceStats => ({
  service,
  id,
  version: '0.1.0',
  node,
  started,
  requests: 10,
  errors: 1,
  lastError: '',
});

describe('buildReport', () => {
  it('tells ok, missing and failing apart, and takes uptime from the youngest replica', () => {
    const lists: NodeLists = {
      subid: { mode: 'shared', pool: { uid: 1, gid: 1, size: 65536 }, allocations: [] },
      failures: { vol: 'list timed out', shiftfs: 'no instance answered its list', rootfs: 'x' },
    };
    const report = buildReport(
      {
        instances: [
          instance('sysbox-subid', 'n1', '2026-12-07T11:00:00.000Z', 'a'),
          instance('sysbox-subid', 'n1', '2026-12-07T11:59:00.000Z', 'b'),
          instance('sysbox-vol', 'n1', '2026-12-06T12:00:00.000Z'),
          // Another node's instance is not counted on n1.
          instance('sysbox-rootfs', 'n2', '2026-12-07T11:00:00.000Z'),
        ],
        lists: new Map([['n1', lists]]),
      },
      NOW,
    );
    const n1 = report.nodes.find((n) => n.node === 'n1')!;
    expect(n1.services.map((s) => [s.service, s.replicas, s.uptimeSeconds, s.health, s.problem])).toEqual([
      ['sysbox-subid', 2, 60, 'ok', undefined],
      ['sysbox-vol', 1, 86400, 'failing', 'list timed out'],
      ['sysbox-shiftfs', 0, undefined, 'missing', 'no instance answered its list'],
      ['sysbox-rootfs', 0, undefined, 'missing', 'x'],
    ]);
    expect(n1.services[0]!.requests).toBe(20);
    expect(n1.services[0]!.errors).toBe(2);
    // n2 answered discovery but its lists were not read: nothing there counts as ok.
    const n2 = report.nodes.find((n) => n.node === 'n2')!;
    expect(n2.services.map((s) => [s.health, s.problem])).toEqual([
      ['missing', 'its list was not read'],
      ['missing', 'its list was not read'],
      ['missing', 'its list was not read'],
      ['failing', 'its list was not read'],
    ]);
    expect(report.totals.servicesNotOk).toBe(7);
    expect(report.totals.serviceInstances).toBe(4);
  });

  it('joins holdings by container id, a mark or prep held by several counted for each', () => {
    const report = buildReport(
      {
        instances: [],
        lists: new Map([
          [
            'n1',
            {
              vol: {
                volumes: [
                  { kind: 'kubelet', id: 'c2' },
                  { kind: 'docker', id: 'c2' },
                ],
                preps: [{ source: '/srv/x', holders: ['c1', 'c2'] }],
              },
              shiftfs: { supported: false, marks: [{ markpoint: '/m', holders: ['c1', 'c3'] }] },
              failures: {},
            },
          ],
        ]),
      },
      NOW,
    );
    const n1 = report.nodes[0]!;
    expect(n1.containers).toEqual([
      { id: 'c1', volumes: [], marks: ['/m'], preps: ['/srv/x'] },
      { id: 'c2', volumes: ['docker', 'kubelet'], marks: [], preps: ['/srv/x'] },
      { id: 'c3', volumes: [], marks: ['/m'], preps: [] },
    ]);
    expect(n1.counts).toMatchObject({ containers: 3, volumes: 2, marks: 1, preps: 1 });
    expect(n1.volumesByKind).toEqual({ docker: 1, kubelet: 1 });
  });

  it('in summary mode counts from the summaries, names no container, and sums nodes', () => {
    const report = buildReport(
      {
        instances: [
          instance('sysbox-subid', 'n1', '2026-12-07T11:00:00.000Z'),
          instance('sysbox-vol', 'n2', '2026-12-07T11:00:00.000Z'),
        ],
        lists: new Map(),
        summaries: new Map([
          [
            'n1',
            {
              subid: {
                mode: 'shared',
                pool: { uid: 1, gid: 1, size: 65536 },
                allocations: 7,
              },
              vol: {
                volumes: { docker: 7, kubelet: 0, k0s: 2, k3s: 0, rke2: 0, buildkit: 0, containerd: 0 },
                preps: 1,
              },
              rootfs: { clones: 4, uppers: 3 },
              failures: { shiftfs: 'no instance answered its summary' },
            },
          ],
        ]),
      },
      NOW,
    );
    expect(report.mode).toBe('summary');
    const [n1, n2] = report.nodes as [(typeof report.nodes)[0], (typeof report.nodes)[0]];
    expect(n1.containers).toBeUndefined();
    expect(n1.subid).toEqual({ mode: 'shared', pool: { uid: 1, gid: 1, size: 65536 } });
    expect(n1.volumesByKind).toEqual({ docker: 7, k0s: 2 });
    expect(n1.counts).toEqual({ subidRanges: 7, volumes: 9, clones: 4, upperShifts: 3, marks: 0, preps: 1 });
    expect(n1.services.map((s) => s.health)).toEqual(['ok', 'ok', 'missing', 'ok']);
    // n2 answered discovery only: its summaries were not read.
    expect(n2.services[1]).toMatchObject({ health: 'failing', problem: 'its summary was not read' });
    expect(report.totals).toMatchObject({ nodes: 2, subidRanges: 7, volumes: 9, servicesNotOk: 5 });
    expect(report.totals.containers).toBeUndefined();
  });
});

describe('format', () => {
  it.each([
    [0, '0s'],
    [59, '59s'],
    [125, '2m5s'],
    [3725, '1h2m'],
    [93784, '1d2h'],
  ])('uptime %i s is %s', (s, text) => expect(formatUptime(s)).toBe(text));

  it('aligns columns to the widest cell', () => {
    expect(
      alignRows([
        ['A', 'BB', 'C'],
        ['aaa', 'b', 'c'],
      ]),
    ).toEqual(['A    BB  C', 'aaa  b   c']);
  });
});
