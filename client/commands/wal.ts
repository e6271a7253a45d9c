import type { LoadedConfig } from '../../config/load.js';
import type { Output } from '../output.js';
import type { CliValues } from '../cli.js';

// PLACEHOLDER (issue 6, in progress): `pgrunbook wal verify|list|restore-point`.
export async function walCommand(_loaded: LoadedConfig, _out: Output, _sub: string | undefined, _arg: string | undefined, _values: CliValues): Promise<number> {
  throw new Error('not built yet');
}
