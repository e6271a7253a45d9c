// PLACEHOLDER (issue 6, in progress): wal-push / wal-fetch entry point; replaced by the WAL work.
export async function walMain(argv: string[]): Promise<number> {
  process.stderr.write(`pgrunbook ${argv[0]}: not built yet\n`);
  return 1;
}
