import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath, MissingToolError } from '../../stack/binaries.js';

// The stock age CLI (Debian's `age`, installed by scripts/bootstrap.sh): the anchor that proves
// pgrunbook's encrypted backups stay standard (DESIGN invariant 7).

export function ageTool(name: 'age' | 'age-keygen'): string {
  const found = findOnPath(name);
  if (!found) throw new MissingToolError(`the stock ${name} CLI`, 'apt-get install age (scripts/bootstrap.sh installs it when run as root)');
  return found;
}

export interface AgeKey {
  /** The identity file age-keygen wrote (comments + AGE-SECRET-KEY-1...). */
  file: string;
  identity: string;
  recipient: string;
}

/** A fresh X25519 key made by the stock `age-keygen -o FILE` (mode 0600). */
export function ageKeygen(dir: string, name: string): AgeKey {
  const file = join(dir, `${name}.txt`);
  execFileSync(ageTool('age-keygen'), ['-o', file], { stdio: 'ignore' });
  const identity = readFileSync(file, 'utf8').split('\n').find((line) => line.startsWith('AGE-SECRET-KEY-1'))!;
  const recipient = execFileSync(ageTool('age-keygen'), ['-y', file], { encoding: 'utf8' }).trim();
  return { file, identity, recipient };
}
