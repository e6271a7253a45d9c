import { describe, expect, it } from 'vitest';
import { excludeTables } from '../../postgres/catalog.js';

// Row counts must describe what the dump holds: tables pg_dump excludes are not counted, or every
// restore and drill of such a backup would report them "missing".

const tables = [
  { schema: 'public', name: 'users' },
  { schema: 'public', name: 'pgrunbook_canary' },
  { schema: 'public', name: 'audit_2025' },
  { schema: 'audit', name: 'events' },
  { schema: 'billing', name: 'Invoices.Old' },
  { schema: 'billing', name: 'audit_log' },
];

describe('excludeTables follows pg_dump pattern rules', () => {
  it('matches schema-qualified names exactly and unqualified names in any schema', () => {
    expect(excludeTables(tables, { excludeSchemas: [], excludeTables: ['public.pgrunbook_canary'] }).map((t) => t.name)).not.toContain('pgrunbook_canary');
    expect(excludeTables(tables, { excludeSchemas: [], excludeTables: ['audit_*'] }).map((t) => t.name)).toEqual(['users', 'pgrunbook_canary', 'events', 'Invoices.Old']);
  });

  it('folds unquoted names to lower case, keeps quoted ones literal, and drops whole schemas', () => {
    expect(excludeTables(tables, { excludeSchemas: ['AUDIT'], excludeTables: ['billing."Invoices.Old"'] }).map((t) => `${t.schema}.${t.name}`)).toEqual([
      'public.users', 'public.pgrunbook_canary', 'public.audit_2025', 'billing.audit_log',
    ]);
    expect(excludeTables(tables, { excludeSchemas: [], excludeTables: ['billing.Invoices.Old'] })).toHaveLength(6);
    expect(excludeTables(tables, { excludeSchemas: [], excludeTables: ['public.user?'] }).map((t) => t.name)).not.toContain('users');
  });
});
