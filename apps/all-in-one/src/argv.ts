/**
 * One command line for several apps: each flag goes to every chosen app that declares it (a
 * shared flag such as --data-root or --subuid-file means the same to all of them), the
 * all-in-one's own flags stay here, and a flag no chosen app declares is an error.
 */
import type { OptionSpecs } from '@sysbox-mgr-ts/service-kit';

export interface SplitArgv {
  own: string[];
  perApp: string[][];
  unknown: string[];
}

/** Splits argv between the all-in-one's own options and the option sets of each app. */
export function splitArgv(
  argv: readonly string[],
  own: OptionSpecs,
  apps: readonly OptionSpecs[],
): SplitArgv {
  const flagsOf = (specs: OptionSpecs) =>
    new Map(Object.values(specs).map((s) => [s.flag, Boolean(s.boolean)]));
  const ownFlags = flagsOf(own);
  const appFlags = apps.map(flagsOf);
  const out: SplitArgv = { own: [], perApp: apps.map(() => []), unknown: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      out.unknown.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const bare = name.startsWith('no-') ? name.slice(3) : name;
    const isBoolean = (flags: Map<string, boolean>) =>
      flags.get(name) ?? (name !== bare && flags.get(bare) === true ? true : undefined);
    const owners = [ownFlags, ...appFlags].map((flags) => isBoolean(flags));
    const known = owners.findIndex((b) => b !== undefined);
    if (known < 0) {
      out.unknown.push(arg);
      continue;
    }
    // A value in the next token belongs with its flag, for everyone who takes the flag.
    const tokens = eq < 0 && owners[known] === false && i + 1 < argv.length ? [arg, argv[++i]!] : [arg];
    if (owners[0] !== undefined) out.own.push(...tokens);
    owners.slice(1).forEach((b, app) => {
      if (b !== undefined) out.perApp[app]!.push(...tokens);
    });
  }
  return out;
}
