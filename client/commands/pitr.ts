import type { LoadedConfig } from '../../config/load.js';
import type { Output } from '../output.js';
import type { CliValues } from '../cli.js';

// PLACEHOLDER (issue 6, in progress): `pgrunbook pitr ...`, `pgrunbook pitr promote|discard ID`.
export async function pitrCommand(_loaded: LoadedConfig, _out: Output, _sub: string | undefined, _arg: string | undefined, _values: CliValues): Promise<number> {
  throw new Error('not built yet');
}
