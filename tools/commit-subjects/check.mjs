#!/usr/bin/env node
/**
 * The commit-subject gate (CONTRIBUTING.md): every commit after BASELINE has a conventional-commit
 * subject of at most 72 characters, because `nx release` builds the changelogs from them. Commits
 * up to BASELINE predate the rule and are left as they are. A clone without BASELINE in its
 * history (a shallow CI checkout) checks the commits it has.
 */
import { execFileSync } from 'node:child_process';

const BASELINE = '6ef3a00';
const MAX = 72;
const CONVENTIONAL =
  /^(feat|fix|perf|refactor|test|docs|build|ci|chore|style|revert|merge)(\([\w./-]+\))?!?: \S/;

const git = (...args) => execFileSync('git', args, { encoding: 'utf8' }).trim();

let range;
try {
  git('cat-file', '-e', `${BASELINE}^{commit}`);
  range = [`${BASELINE}..HEAD`];
} catch {
  range = ['HEAD'];
}
let log;
try {
  log = git('log', '--format=%h %s', ...range);
} catch {
  console.log('commit subjects: not a git checkout, nothing to check');
  process.exit(0);
}
const bad = log
  .split('\n')
  .filter(Boolean)
  .map((line) => ({ hash: line.slice(0, line.indexOf(' ')), subject: line.slice(line.indexOf(' ') + 1) }))
  .filter(({ subject }) => subject.length > MAX || !CONVENTIONAL.test(subject));
for (const { hash, subject } of bad)
  console.error(`${hash}: "${subject}" (${subject.length} chars): want "type(scope): what", <= ${MAX}`);
if (bad.length > 0) {
  console.error(
    `${bad.length} commit subject(s) break the rule in CONTRIBUTING.md (reword them before merging)`,
  );
  process.exit(1);
}
