import { describe, expect, it } from 'vitest';
import type { BaseBackupEntry } from '../../pitr/base-catalog.js';
import type { BaseBackupManifest } from '../../pitr/manifest.js';
import { planBaseRetention, walBeforeCutoff } from '../../pitr/retention.js';
import { parseBasebackupLog } from '../../postgres/basebackup.js';

// The pure parts of base backups: reading pg_basebackup -v's report, and the retention policy
// with its WAL cutoff (the e2e tests run them against real backups and archives).

const NOW = new Date('2026-11-22T12:00:00Z');

function backup(timestamp: string, state: BaseBackupEntry['state'], startLsn = '0/2000028', timeline = 1): BaseBackupEntry {
  const manifest = state === 'incomplete' ? undefined : ({ startLsn, timeline, segmentSize: 16 * 1024 * 1024 } as BaseBackupManifest);
  return { id: `main/${timestamp}`, cluster: 'main', timestamp, state, ...(manifest ? { manifest } : {}) };
}

describe('parseBasebackupLog', () => {
  it('reads the start point, its timeline and the end point from pg_basebackup -v', () => {
    const stderr = [
      'pg_basebackup: initiating base backup, waiting for checkpoint to complete',
      'pg_basebackup: checkpoint completed',
      'pg_basebackup: write-ahead log start point: 1/A2000028 on timeline 3',
      'pg_basebackup: write-ahead log end point: 1/A2000100',
      'pg_basebackup: base backup completed',
    ].join('\n');
    expect(parseBasebackupLog(stderr)).toEqual({ startLsn: '1/A2000028', stopLsn: '1/A2000100', timeline: 3 });
  });

  it('refuses output without both points, quoting its end', () => {
    expect(() => parseBasebackupLog('pg_basebackup: base backup completed')).toThrow(/did not report its write-ahead log start and end points.*base backup completed/);
  });
});

describe('planBaseRetention', () => {
  const backups = [
    backup('20261122T010000Z', 'verified', '0/9000028'),
    backup('20261121T010000Z', 'failed', '0/8000028'),
    backup('20261120T010000Z', 'verified', '0/6000028'),
    backup('20261101T010000Z', 'failed', '0/3000028'),
    backup('20261019T010000Z', 'verified', '0/2000028'),
    backup('20261122T110000Z', 'incomplete'),
    backup('20261120T000000Z', 'incomplete'),
  ];

  it('without retention keeps everything and cuts no WAL', () => {
    const plan = planBaseRetention(backups, undefined, NOW);
    expect(plan.decisions.every((d) => d.action === 'keep')).toBe(true);
    expect(plan.walCutoff).toBeNull();
  });

  it('keeps the newest verified ones, drops old failed and stale incomplete folders, and cuts WAL at the oldest kept start', () => {
    const plan = planBaseRetention(backups, { keepLast: 2 }, NOW);
    expect(plan.decisions.map((d) => [d.id.slice(5), d.action])).toEqual([
      ['20261122T110000Z', 'keep'],
      ['20261122T010000Z', 'keep'],
      ['20261121T010000Z', 'keep'],
      ['20261120T010000Z', 'keep'],
      ['20261120T000000Z', 'delete'],
      ['20261101T010000Z', 'delete'],
      ['20261019T010000Z', 'delete'],
    ]);
    expect(plan.walCutoff).toEqual({ segment: '000000010000000000000006', backupId: 'main/20261120T010000Z' });
  });

  it('never deletes a base backup a running restore uses, and keeps its WAL', () => {
    const plan = planBaseRetention(backups, { keepLast: 1 }, NOW, new Map([['main/20261019T010000Z', 'pointInTimeRestore pitr-main-x is running']]));
    expect(plan.decisions.find((d) => d.id === 'main/20261019T010000Z')).toMatchObject({ action: 'keep', reasons: ['protected: pointInTimeRestore pitr-main-x is running', 'outside keepLast 1'] });
    expect(plan.walCutoff).toEqual({ segment: '000000010000000000000002', backupId: 'main/20261019T010000Z' });
  });

  it('keeps by age with maxAgeDays, and the newest verified one whatever the age', () => {
    const old = [backup('20260101T000000Z', 'verified', '0/5000000'), backup('20250101T000000Z', 'verified', '0/2000000')];
    const plan = planBaseRetention(old, { maxAgeDays: 30 }, NOW);
    expect(plan.decisions.map((d) => d.action)).toEqual(['keep', 'delete']);
    expect(plan.decisions[0]!.reasons[0]).toBe('newest verified backup (never deleted)');
  });
});

describe('walBeforeCutoff', () => {
  const cutoff = '000000020000000100000005';
  it.each([
    ['000000020000000100000004', true],
    ['000000010000000100000004', true],
    ['000000030000000100000004', true],
    ['000000020000000100000005', false],
    ['000000010000000100000006', false],
    ['000000020000000100000004.00000028.backup', true],
    ['000000010000000100000004.partial', true],
    ['00000002.history', false],
    ['not-wal', false],
  ])('%s before the cutoff: %s', (name, before) => {
    expect(walBeforeCutoff(name, cutoff)).toBe(before);
  });
});
