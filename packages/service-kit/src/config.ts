/**
 * Daemon configuration from flags and environment, validated by zod. Flags win over environment,
 * environment over defaults. `--help` lists every option with its variable and default.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { HostPath, NodeName, SysboxError, nodeNameFromHost } from '@sysbox-mgr-ts/contracts';
import { parseListenAddress } from '@sysbox-mgr-ts/metrics';

export interface OptionSpec<S extends z.ZodType = z.ZodType> {
  /** Long flag name without dashes, e.g. `nats-url`. */
  flag: string;
  env?: string;
  description: string;
  schema: S;
  /** A boolean switch: `--flag` sets true, `--no-flag` false. */
  boolean?: boolean;
  /** One-letter alias, `-l` (upstream's CLI has a few). */
  short?: string;
  /** Accepted but not listed in --help (upstream's hidden flags, kept so its unit files still start us). */
  hidden?: boolean;
}

export type OptionSpecs = Record<string, OptionSpec>;
export type ConfigOf<O extends OptionSpecs> = { [K in keyof O]: z.infer<O[K]['schema']> };

export function option<S extends z.ZodType>(spec: OptionSpec<S>): OptionSpec<S> {
  return spec;
}

/** Parses an environment or flag value as a boolean switch. */
const BoolText = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no', ''])])
  .transform((v) => v === true || v === 'true' || v === '1' || v === 'yes' || v === '');

export function boolOption(flag: string, env: string | undefined, description: string, def = false) {
  return option({ flag, env, description, boolean: true, schema: BoolText.default(def) });
}

/** Options every daemon takes. */
export const commonOptions = {
  natsUrl: option({
    flag: 'nats-url',
    env: 'NATS_URL',
    description: 'NATS server URL(s), comma-separated',
    schema: z.string().min(1).default('nats://127.0.0.1:4222'),
  }),
  natsCreds: option({
    flag: 'nats-creds',
    env: 'NATS_CREDS',
    description:
      "credentials file, owner-only (0600): an nkey seed from sysbox-nats-auth or a JWT .creds file; 'none' connects without (default: /etc/sysbox-mgr-ts/nats/<identity>.nk)",
    schema: z.union([z.literal('none'), HostPath]).optional(),
  }),
  natsTlsCa: option({
    flag: 'nats-tls-ca',
    env: 'NATS_TLS_CA',
    description: "CA file that signed the NATS servers' certificates: connect with TLS and verify them",
    schema: HostPath.optional(),
  }),
  natsTlsCert: option({
    flag: 'nats-tls-cert',
    env: 'NATS_TLS_CERT',
    description: 'client certificate for NATS servers that require one (with --nats-tls-key)',
    schema: HostPath.optional(),
  }),
  natsTlsKey: option({
    flag: 'nats-tls-key',
    env: 'NATS_TLS_KEY',
    description: 'key of the client certificate (owner-only file)',
    schema: HostPath.optional(),
  }),
  node: option({
    flag: 'node',
    env: 'SYSBOX_NODE',
    description: 'node name in subjects and state keys (default: host name, made subject-safe)',
    schema: NodeName.default(nodeNameFromHost(hostname())),
  }),
  dataRoot: option({
    flag: 'data-root',
    env: 'SYSBOX_DATA_ROOT',
    description: 'root of the host dirs this daemon owns',
    schema: HostPath.default('/var/lib/sysbox'),
  }),
  logLevel: option({
    flag: 'log-level',
    env: 'LOG_LEVEL',
    description: 'trace|debug|info|warn|error|fatal',
    schema: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  }),
  logPretty: boolOption('log-pretty', 'LOG_PRETTY', 'human-readable logs when stdout is a terminal'),
  metricsAddress: option({
    flag: 'metrics-address',
    env: 'SYSBOX_METRICS_ADDRESS',
    description:
      'serve Prometheus metrics at http://<host:port>/metrics (off when unset; bind 127.0.0.1 unless a scraper elsewhere must reach it)',
    schema: z
      .string()
      .refine((s) => {
        try {
          return parseListenAddress(s) !== undefined;
        } catch {
          return false;
        }
      }, 'must be host:port, e.g. 127.0.0.1:9464')
      .optional(),
  }),
  kvReplicas: option({
    flag: 'kv-replicas',
    env: 'SYSBOX_KV_REPLICAS',
    description: 'replicas of the state bucket when this daemon creates it (3 on a cluster)',
    schema: z.coerce.number().int().min(1).max(5).default(1),
  }),
};

export type CommonConfig = ConfigOf<typeof commonOptions>;

export type ParseResult<O extends OptionSpecs> = { help: string } | { config: ConfigOf<O> };

/** Parses argv (without node and script) and env; throws `invalid-request` with every problem listed. */
export function parseConfig<O extends OptionSpecs>(
  specs: O,
  argv: readonly string[],
  env: Record<string, string | undefined>,
  about = '',
): ParseResult<O> {
  const byFlag = new Map(Object.entries(specs).map(([key, s]) => [s.flag, { key, spec: s }]));
  const raw: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(specs)) if (s.env && env[s.env] !== undefined) raw[key] = env[s.env];

  const problems: string[] = [];
  const byShort = new Map(Object.values(specs).flatMap((s) => (s.short ? [[s.short, s.flag] as const] : [])));
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return { help: helpText(specs, about) };
    // Upstream's Go CLI takes `-l x` for a short alias and `-log-level x` for `--log-level x`.
    const short = /^-([a-zA-Z])(=.*)?$/.exec(arg);
    if (short && byShort.has(short[1]!)) arg = `--${byShort.get(short[1]!)}${short[2] ?? ''}`;
    else if (/^-[a-z][a-z0-9-]+(=.*)?$/.test(arg)) arg = `-${arg}`;
    if (!arg.startsWith('--')) {
      problems.push(`unexpected argument ${arg}`);
      continue;
    }
    const eq = arg.indexOf('=');
    let name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    let value: string | boolean | undefined = eq < 0 ? undefined : arg.slice(eq + 1);
    let found = byFlag.get(name);
    if (!found && name.startsWith('no-') && byFlag.get(name.slice(3))?.spec.boolean) {
      found = byFlag.get(name.slice(3));
      name = name.slice(3);
      value = false;
    }
    if (!found) {
      problems.push(`unknown option --${name}`);
      continue;
    }
    if (value === undefined) {
      if (found.spec.boolean) value = true;
      else if (i + 1 < argv.length) value = argv[++i];
      else {
        problems.push(`--${name} needs a value`);
        continue;
      }
    }
    raw[found.key] = value;
  }

  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(specs)) {
    const r = s.schema.safeParse(raw[key]);
    if (r.success) out[key] = r.data;
    else
      problems.push(
        `--${s.flag}${s.env ? ` (${s.env})` : ''}: ${r.error.issues.map((i) => i.message).join('; ')}`,
      );
  }
  if (problems.length > 0)
    throw new SysboxError('invalid-request', `bad configuration: ${problems.join(', ')}`);
  return { config: out as ConfigOf<O> };
}

export function helpText(specs: OptionSpecs, about: string): string {
  const rows = Object.values(specs)
    .filter((s) => !s.hidden)
    .map((s) => {
      const def = defaultOf(s.schema);
      const flag = `${s.short ? `-${s.short}, ` : ''}${s.boolean ? `--[no-]${s.flag}` : `--${s.flag} <value>`}`;
      return `  ${flag.padEnd(34)} ${s.description}${s.env ? ` [${s.env}]` : ''}${def === undefined ? '' : ` (default: ${JSON.stringify(def)})`}`;
    });
  return `${about ? `${about}\n\n` : ''}Options:\n${rows.join('\n')}\n  --help                             show this help\n`;
}

function defaultOf(schema: z.ZodType): unknown {
  const r = schema.safeParse(undefined);
  return r.success ? r.data : undefined;
}
