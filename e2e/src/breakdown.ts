/**
 * Where a lifecycle's time goes: each gRPC call as the client sees it, and each daemon's own
 * per-request `ms` (service-kit logs one line per request) plus the long work they log (rsync,
 * id shifts), taken from the daemons' JSON log files for a time window. Besides the sums, each
 * step's peak overlap: a step that never ran more than once at a time while 8 containers asked for
 * it is what serializes them.
 */
import { readFileSync } from 'node:fs';
import type { ServiceError } from '@grpc/grpc-js';
import type { SysboxMgrClient } from './grpc.js';
import type { Proc } from './harness.js';

/** One timed thing: [start, end] in epoch milliseconds. */
export interface Span {
  step: string;
  start: number;
  end: number;
}

/**
 * The same client, every unary call recorded as `grpc <Method>` (a failed one as
 * `grpc <Method> (<code>)`), so the lifecycle code needs no change.
 */
export function timedClient(client: SysboxMgrClient, record: (s: Span) => void): SysboxMgrClient {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof prop !== 'string' || typeof v !== 'function' || !/^[A-Z]/.test(prop)) return v;
      return (req: object, meta: object, cb: (err: ServiceError | null, res: unknown) => void) => {
        const start = Date.now();
        return (v as Function).call(target, req, meta, (err: ServiceError | null, res: unknown) => {
          record({ step: err ? `grpc ${prop} (${err.code})` : `grpc ${prop}`, start, end: Date.now() });
          cb(err, res);
        });
      };
    },
  });
}

interface LogLine {
  time?: string;
  msg?: string;
  subject?: string;
  ms?: number;
  what?: string;
  service?: string;
}

/** What each daemon logged as finished within [from, to]: requests by subject, rsyncs and shifts. */
export function daemonSpans(procs: readonly Proc[], from: number, to: number): Span[] {
  const out: Span[] = [];
  for (const p of procs) {
    let text: string;
    try {
      text = readFileSync(p.logFile, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      let l: LogLine;
      try {
        l = JSON.parse(line) as LogLine;
      } catch {
        continue;
      }
      if (typeof l.ms !== 'number' || !l.time) continue;
      const end = Date.parse(l.time);
      if (end < from || end > to) continue;
      let step: string | undefined;
      if (l.subject && (l.msg === 'ok' || l.msg === undefined))
        step = `${p.app}: ${l.subject.split('.').slice(2).join('.')}`;
      else if (l.subject) step = `${p.app}: ${l.subject.split('.').slice(2).join('.')} (failed)`;
      if (l.msg === 'rsync done') step = `${p.app}:   rsync ${l.what?.replace(/ \S+$/, '') ?? ''}`;
      else if (l.msg === 'shifted ids' || l.msg === 'id shift done') step = `${p.app}:   id shift walk`;
      else if (l.msg === 'exec done') step = `${p.app}:   exec`;
      if (step) out.push({ step, start: end - l.ms, end });
    }
  }
  return out;
}

export interface StepRow {
  step: string;
  calls: number;
  totalMs: number;
  meanMs: number;
  maxMs: number;
  /** Most spans of this step running at one instant. */
  peakOverlap: number;
}

export function summarizeSpans(spans: readonly Span[]): StepRow[] {
  const by = new Map<string, Span[]>();
  for (const s of spans) by.set(s.step, [...(by.get(s.step) ?? []), s]);
  return [...by]
    .map(([step, list]) => {
      const durations = list.map((s) => s.end - s.start);
      const totalMs = durations.reduce((a, b) => a + b, 0);
      return {
        step,
        calls: list.length,
        totalMs,
        meanMs: totalMs / list.length,
        maxMs: Math.max(...durations),
        peakOverlap: peakOverlap(list),
      };
    })
    .sort((a, b) => a.step.localeCompare(b.step));
}

function peakOverlap(list: readonly Span[]): number {
  const edges = list.flatMap((s) => [
    [s.start, 1],
    [s.end, -1],
  ]) as [number, number][];
  // Ends before starts at the same instant: back-to-back is not overlap.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let cur = 0;
  let peak = 0;
  for (const [, d] of edges) peak = Math.max(peak, (cur += d));
  return peak;
}

/** A markdown table; `per` divides totals (e.g. by the number of lifecycles in the window). */
export function formatBreakdown(title: string, rows: readonly StepRow[], per: number): string[] {
  const r = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  return [
    `### ${title}`,
    '',
    '| step | calls | ms per lifecycle | mean ms | max ms | peak overlap |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (x) =>
        `| ${x.step} | ${x.calls} | ${r(x.totalMs / per)} | ${r(x.meanMs)} | ${r(x.maxMs)} | ${x.peakOverlap} |`,
    ),
    '',
  ];
}
