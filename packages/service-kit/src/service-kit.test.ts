import { Writable } from 'node:stream';
import { headers, type NatsConnection } from '@nats-io/nats-core';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { SysboxError, defineContract, subjectOf, type ServiceContract } from '@sysbox-mgr-ts/contracts';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { CALL_ID_HEADER } from './wire.js';
import {
  ERROR_CODE_HEADER,
  createLogger,
  silentLogger,
  createServiceClient,
  decodeJson,
  encodeJson,
  handle,
  parseConfig,
  commonOptions,
  serve,
  type Handler,
  type MicroService,
  boolOption,
  option,
} from './index.js';

const echo = defineContract({
  service: 'subid',
  endpoint: 'echo',
  subject: subjectOf('subid', 'echo'),
  description: 'echo',
  request: z.object({ id: z.string().min(1), n: z.number().int() }),
  reply: z.object({ id: z.string(), n: z.number(), by: z.string() }),
  errors: ['invalid-request'],
});
const fail = defineContract({
  service: 'subid',
  endpoint: 'fail',
  subject: subjectOf('subid', 'fail'),
  description: 'fails',
  request: z.object({ kind: z.enum(['typed', 'unknown', 'sync']) }),
  reply: z.object({}),
  errors: ['exhausted', 'internal'],
});
const testService = {
  service: 'subid',
  name: 'sysbox-test',
  bucket: 'sysbox-test',
  description: 'kit test service',
  contracts: [echo, fail],
} as const satisfies ServiceContract;

const silent = silentLogger;

describe('service kit on a real nats-server', () => {
  const nats = useNatsServer({ jetstream: false });
  let ncB: NatsConnection;
  let a: MicroService;
  let b: MicroService;
  const handled: string[] = [];

  const bindings = (who: string) => [
    handle(echo, async (req) => {
      handled.push(who);
      return { id: req.id, n: req.n, by: who };
    }),
    handle(fail, (req) => {
      if (req.kind === 'sync') throw new SysboxError('exhausted', 'sync pool empty');
      return req.kind === 'typed'
        ? Promise.reject(new SysboxError('exhausted', 'pool is empty'))
        : Promise.reject(new TypeError('cannot read x of undefined'));
    }),
  ];

  beforeAll(async () => {
    ncB = await nats.ns.connect();
    a = serve({
      nc: nats.nc,
      service: testService,
      node: 'n1',
      version: '1.2.3',
      log: silent(),
      bindings: bindings('a'),
    });
    b = serve({
      nc: ncB,
      service: testService,
      node: 'n1',
      version: '1.2.3',
      log: silent(),
      bindings: bindings('b'),
    });
    await nats.nc.flush();
    await ncB.flush();
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await ncB?.close();
  });

  it('round-trips a request through the typed client', async () => {
    const client = createServiceClient(nats.nc, { node: 'n1' });
    const r = await client.call(echo, { id: 'c1', n: 7 });
    expect(r).toMatchObject({ id: 'c1', n: 7 });
  });

  it('answers a bad request invalid-request without calling the handler', async () => {
    const before = handled.length;
    const msg = await nats.nc.request('sysbox.n1.subid.echo', encodeJson({ id: '', n: 'x' }), {
      timeout: 2000,
    });
    expect(msg.headers?.get(ERROR_CODE_HEADER)).toBe('400');
    const body = decodeJson(msg.data) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('invalid-request');
    expect(body.error.message).toMatch(/id/);
    expect(body.error.message).toMatch(/n/);
    const notJson = await nats.nc.request('sysbox.n1.subid.echo', new TextEncoder().encode('{oops'), {
      timeout: 2000,
    });
    expect((decodeJson(notJson.data) as any).error.message).toMatch(/not valid JSON/);
    expect(handled.length).toBe(before);
  });

  it('turns async and sync failures into typed replies, counted in $SRV.STATS', async () => {
    const client = createServiceClient(nats.nc, { node: 'n1' });
    await expect(client.call(fail, { kind: 'typed' })).rejects.toMatchObject({
      code: 'exhausted',
      message: 'pool is empty',
    });
    await expect(client.call(fail, { kind: 'sync' })).rejects.toMatchObject({ code: 'exhausted' });
    const unknown = await nats.nc.request('sysbox.n1.subid.fail', encodeJson({ kind: 'unknown' }), {
      timeout: 2000,
    });
    expect(unknown.headers?.get(ERROR_CODE_HEADER)).toBe('500');
    expect((decodeJson(unknown.data) as any).error).toEqual({
      code: 'internal',
      message: 'cannot read x of undefined',
    });

    const stats = await gather(nats.nc, '$SRV.STATS.sysbox-test');
    const failEndpoints = stats.flatMap((s: any) => s.endpoints.filter((e: any) => e.name === 'fail'));
    const total = failEndpoints.reduce((n: number, e: any) => n + e.num_errors, 0);
    expect(total).toBe(3);
    // Whichever replica answered the last request holds its error as last_error.
    expect(failEndpoints.some((e: any) => e.last_error === 'internal: cannot read x of undefined')).toBe(
      true,
    );
  });

  it('$SRV.PING and $SRV.INFO list both replicas with their endpoints', async () => {
    const pings = await gather(nats.nc, '$SRV.PING');
    expect(pings.filter((p: any) => p.name === 'sysbox-test')).toHaveLength(2);
    expect(pings[0]).toMatchObject({ type: 'io.nats.micro.v1.ping_response', version: '1.2.3' });
    const infos = await gather(nats.nc, '$SRV.INFO.sysbox-test');
    expect(infos).toHaveLength(2);
    expect(infos[0].endpoints.map((e: any) => e.subject).sort()).toEqual([
      'sysbox.n1.subid.echo',
      'sysbox.n1.subid.fail',
    ]);
    expect(infos[0].endpoints[0].queue_group).toBe('sysbox-test');
    const one = await gather(nats.nc, `$SRV.INFO.sysbox-test.${a.id}`);
    expect(one.map((i: any) => i.id)).toEqual([a.id]);
  });

  it('two replicas in one queue group both serve', async () => {
    const client = createServiceClient(nats.nc, { node: 'n1' });
    const by = new Set<string>();
    for (let i = 0; i < 60; i++) by.add((await client.call(echo, { id: 'c', n: i })).by);
    expect(by).toEqual(new Set(['a', 'b']));
  });

  it('client maps no responders to unavailable, fast', async () => {
    const client = createServiceClient(nats.nc, { node: 'nobody', timeoutMs: 5000 });
    // unavailable, not timeout: it did not wait out its 5 s bound.
    await expect(client.call(echo, { id: 'c', n: 1 })).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('client validates the request before sending', async () => {
    const client = createServiceClient(nats.nc, { node: 'n1' });
    await expect(client.call(echo, { id: '', n: 1 })).rejects.toMatchObject({ code: 'invalid-request' });
  });

  /** One more service of a single echo-shaped endpoint, on the shared connection. */
  const serveOne = (contract: typeof echo, handler: Handler<typeof echo>): MicroService => {
    const service = {
      ...testService,
      name: `sysbox-${contract.endpoint}`,
      contracts: [contract],
    } as const satisfies ServiceContract;
    return serve({
      nc: nats.nc,
      service,
      node: 'n1',
      version: '0.0.1',
      log: silent(),
      bindings: [handle(contract, handler)],
    });
  };

  it('stop waits for requests in flight', async () => {
    const slow = defineContract({ ...echo, endpoint: 'slow', subject: subjectOf('subid', 'slow') });
    let started = false;
    let finished = false;
    const s = serveOne(slow, async (req) => {
      started = true;
      await new Promise((r) => setTimeout(r, 300));
      finished = true;
      return { id: req.id, n: req.n, by: 'slow' };
    });
    await nats.nc.flush();
    const reply = createServiceClient(nats.nc, { node: 'n1' }).call(slow, { id: 'c', n: 1 });
    await vi.waitFor(() => expect(started).toBe(true));
    await s.stop();
    expect(finished).toBe(true);
    await expect(reply).resolves.toMatchObject({ by: 'slow' });
  });

  it('runs a call once when the client sends copies of it (a reply that may have been lost)', async () => {
    const long = defineContract({
      ...echo,
      endpoint: 'long',
      subject: subjectOf('subid', 'long'),
      idempotent: true,
    });
    let runs = 0;
    const s = serveOne(long, async (req) => {
      runs++;
      await new Promise((r) => setTimeout(r, 700));
      return { id: req.id, n: runs, by: 'long' };
    });
    await nats.nc.flush();
    // Copies go out every 100 ms while the first runs for 700 ms: they share its outcome.
    const client = createServiceClient(nats.nc, { node: 'n1', resendAfterMs: 100 });
    await expect(client.call(long, { id: 'c', n: 1 })).resolves.toEqual({ id: 'c', n: 1, by: 'long' });
    expect(runs).toBe(1);
    // Another call is another call.
    await expect(client.call(long, { id: 'c', n: 1 })).resolves.toMatchObject({ n: 2 });
    // A call id reused with another body is not a copy: it runs, and gets its own answer.
    const h = headers();
    h.set(CALL_ID_HEADER, 'reused');
    const ask = async (n: number) =>
      decodeJson(
        (await nats.nc.request(long.subject('n1'), encodeJson({ id: 'c', n }), { headers: h, timeout: 5000 }))
          .data,
      );
    expect(await ask(1)).toMatchObject({ n: 3 });
    expect(await ask(2)).toMatchObject({ n: 4 });
    await s.stop();
  });
});

async function gather(nc: NatsConnection, subject: string): Promise<any[]> {
  const out: any[] = [];
  const it = await nc.requestMany(subject, undefined, { maxWait: 500 });
  for await (const m of it) out.push(decodeJson(m.data));
  return out;
}

describe('config', () => {
  it('reads flags over env over defaults and lists problems', () => {
    const r = parseConfig(commonOptions, ['--node', 'h1', '--no-log-pretty'], {
      NATS_URL: 'nats://x:1',
      LOG_PRETTY: '1',
    });
    expect('config' in r && r.config).toMatchObject({
      node: 'h1',
      natsUrl: 'nats://x:1',
      dataRoot: '/var/lib/sysbox',
      logPretty: false,
      kvReplicas: 1,
    });
    expect(() => parseConfig(commonOptions, ['--node', 'Bad.Node', '--bogus'], {})).toThrow(
      /--node.*|unknown option --bogus/,
    );
    expect(() => parseConfig(commonOptions, ['--data-root', 'relative'], {})).toThrow(SysboxError);
  });
  it('takes --metrics-address as host:port, off by default (issue #28)', () => {
    const off = parseConfig(commonOptions, [], {});
    expect('config' in off && off.config.metricsAddress).toBeUndefined();
    const on = parseConfig(commonOptions, [], { SYSBOX_METRICS_ADDRESS: '127.0.0.1:9464' });
    expect('config' in on && on.config.metricsAddress).toBe('127.0.0.1:9464');
    expect(() => parseConfig(commonOptions, ['--metrics-address', '9464'], {})).toThrow(/--metrics-address/);
  });
  it('answers --help with every option', () => {
    const r = parseConfig(commonOptions, ['--help'], {});
    expect('help' in r).toBe(true);
    const help = (r as { help: string }).help;
    for (const s of Object.values(commonOptions)) expect(help).toContain(`${s.flag}`);
    expect(help).toContain('NATS_URL');
  });
  it("takes upstream's spellings: Go-style single-dash long flags, one-letter aliases, hidden flags", () => {
    const specs = {
      ...commonOptions,
      log: option({ flag: 'log', short: 'l', description: 'log file', schema: z.string().default('') }),
      cpuProfiling: { ...boolOption('cpu-profiling', undefined, 'no effect'), hidden: true },
    };
    const r = parseConfig(
      specs,
      ['-log-level', 'debug', '-l', '/var/log/x.log', '-cpu-profiling', '-data-root=/srv/s'],
      {},
    );
    expect('config' in r && r.config).toMatchObject({
      logLevel: 'debug',
      log: '/var/log/x.log',
      cpuProfiling: true,
      dataRoot: '/srv/s',
    });
    const help = (parseConfig(specs, ['--help'], {}) as { help: string }).help;
    expect(help).toContain('-l, --log');
    expect(help).not.toContain('cpu-profiling');
  });
});

describe('logger', () => {
  const capture = () => {
    const chunks: string[] = [];
    const stream = new Writable({
      write: (c, _e, cb) => {
        chunks.push(String(c));
        cb();
      },
    });
    return { stream, text: () => chunks.join('') };
  };
  it('writes JSON with the daemon base fields by default', () => {
    const out = capture();
    createLogger({
      service: 'svc',
      node: 'n1',
      version: '1.0.0',
      level: 'info',
      destination: out.stream,
    }).info({ id: 'c1' }, 'hello');
    const rec = JSON.parse(out.text());
    expect(rec).toMatchObject({
      service: 'svc',
      node: 'n1',
      version: '1.0.0',
      id: 'c1',
      msg: 'hello',
      level: 30,
    });
  });
  it('writes one uncoloured text line per record with --log-format text', () => {
    const out = capture();
    const log = createLogger({
      service: 'svc',
      node: 'n1',
      version: '1.0.0',
      level: 'info',
      destination: out.stream,
      format: 'text',
    });
    log.warn({ id: 'c1' }, 'hello');
    expect(out.text()).toMatch(/WARN.*hello/);
    expect(out.text()).not.toMatch(/^\{/);
    expect(out.text()).not.toMatch(/\u001b\[/);
  });
});
