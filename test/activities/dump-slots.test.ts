import { describe, expect, it } from 'vitest';
import { DumpSlots } from '../../activities/dump-slots.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A dump that runs until `finish()` is called. */
function heldDump(log: string[], name: string) {
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  return {
    run: async () => {
      log.push(`start ${name}`);
      await done;
      log.push(`end ${name}`);
      return name;
    },
    finish: () => finish(),
  };
}

describe('DumpSlots', () => {
  it('runs at most `limit` dumps at once and starts the waiting ones in arrival order', async () => {
    const slots = new DumpSlots(2);
    const log: string[] = [];
    const dumps = ['a', 'b', 'c', 'd'].map((name) => heldDump(log, name));
    const results = dumps.map((d) => slots.run(undefined, d.run));
    await tick();
    expect(log).toEqual(['start a', 'start b']);
    expect(slots.state).toEqual({ running: 2, waiting: 2 });
    dumps[1]!.finish();
    await tick();
    expect(log).toEqual(['start a', 'start b', 'end b', 'start c']);
    dumps[0]!.finish();
    dumps[2]!.finish();
    dumps[3]!.finish();
    expect(await Promise.all(results)).toEqual(['a', 'b', 'c', 'd']);
    expect(slots.state).toEqual({ running: 0, waiting: 0 });
  });

  it('frees the slot when a dump fails', async () => {
    const slots = new DumpSlots(1);
    await expect(slots.run(undefined, () => Promise.reject(new Error('pg_dump exited 1')))).rejects.toThrow('pg_dump exited 1');
    expect(await slots.run(undefined, () => Promise.resolve('next'))).toBe('next');
  });

  it('gives up a waiting place when cancelled, without taking a slot', async () => {
    const slots = new DumpSlots(1);
    const log: string[] = [];
    const first = heldDump(log, 'first');
    const running = slots.run(undefined, first.run);
    const cancel = new AbortController();
    const waiting = slots.run(cancel.signal, () => Promise.resolve('never'));
    const later = slots.run(undefined, () => Promise.resolve('later'));
    await tick();
    cancel.abort(new Error('cancelled by the workflow'));
    await expect(waiting).rejects.toThrow('cancelled by the workflow');
    expect(slots.state).toEqual({ running: 1, waiting: 1 });
    first.finish();
    expect(await running).toBe('first');
    expect(await later).toBe('later');
    await expect(slots.run(cancel.signal, () => Promise.resolve('x'))).rejects.toThrow('cancelled by the workflow');
  });

  it('refuses a limit below one', () => {
    expect(() => new DumpSlots(0)).toThrow('expected a positive integer');
  });
});
