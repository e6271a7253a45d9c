// Calendar fields as written in pgrunbook.yaml (or in a five-field cron string), parsed into the
// numeric ranges Temporal's structured calendar specs use. Pure: config validation, `schedules
// apply` and the human description all share it.

export type CalendarFieldName = 'minute' | 'hour' | 'dayOfMonth' | 'month' | 'dayOfWeek';

/** Inclusive range with a step, in numbers: months 1-12, weekdays 0-6 with 0 = Sunday. */
export interface FieldRange {
  start: number;
  end: number;
  step: number;
}

/** Every field of a calendar as ranges; `null` means every value ("*"). */
export type ParsedCalendar = Record<CalendarFieldName, FieldRange[] | null>;

export const CALENDAR_FIELDS: readonly CalendarFieldName[] = ['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'];

export const MONTH_NAMES = ['JANUARY', 'FEBRUARY', 'MARCH', 'APRIL', 'MAY', 'JUNE', 'JULY', 'AUGUST', 'SEPTEMBER', 'OCTOBER', 'NOVEMBER', 'DECEMBER'] as const;
export const WEEKDAY_NAMES = ['SUNDAY', 'MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY'] as const;

const BOUNDS: Record<CalendarFieldName, { min: number; max: number; expected: string }> = {
  minute: { min: 0, max: 59, expected: 'a minute 0-59' },
  hour: { min: 0, max: 23, expected: 'an hour 0-23' },
  dayOfMonth: { min: 1, max: 31, expected: 'a day of the month 1-31' },
  month: { min: 1, max: 12, expected: 'a month 1-12 or a name (JANUARY, JAN)' },
  dayOfWeek: { min: 0, max: 6, expected: 'a weekday name (SATURDAY, SAT) or 0-6 with 0 = Sunday (7 is Sunday too)' },
};

const SYNTAX = 'a value, "*", a range "1-7", a step "*/15" or "0-30/10", or a comma list "1,15"';

export type FieldParse = { ok: true; ranges: FieldRange[] | null } | { ok: false; message: string };

/** Parses one field: a number, a name (months, weekdays), "*", "?", ranges, steps and lists. */
export function parseCalendarField(field: CalendarFieldName, value: number | string): FieldParse {
  const bounds = BOUNDS[field];
  const text = String(value).trim();
  if (text === '*' || (text === '?' && (field === 'dayOfMonth' || field === 'dayOfWeek'))) return { ok: true, ranges: null };
  const ranges: FieldRange[] = [];
  for (const part of text.split(',')) {
    const match = /^([^/-]+|\*)(?:-([^/-]+))?(?:\/(\d+))?$/.exec(part.trim());
    if (!match) return { ok: false, message: `"${text}" is not ${SYNTAX}` };
    const [, startText, endText, stepText] = match;
    const step = stepText !== undefined ? Number(stepText) : 1;
    if (step < 1) return { ok: false, message: `"${part}": a step must be 1 or more` };
    if (startText === '*') {
      if (endText !== undefined) return { ok: false, message: `"${part}" is not ${SYNTAX}` };
      ranges.push({ start: bounds.min, end: bounds.max, step });
      continue;
    }
    const start = fieldValue(field, startText!);
    if (start === null) return { ok: false, message: `"${startText}" in "${text}" is not ${bounds.expected}` };
    // cron's "5/15" means from 5 to the end of the field, every 15.
    const end = endText !== undefined ? fieldValue(field, endText) : stepText !== undefined ? bounds.max : start;
    if (end === null) return { ok: false, message: `"${endText}" in "${text}" is not ${bounds.expected}` };
    // "SAT-SUN", "MON-7": Sunday as the end of the week is 7, which Temporal spells 0.
    if (field === 'dayOfWeek' && end === 0 && start > 0 && endText !== undefined) {
      ranges.push({ start, end: 6, step });
      if ((7 - start) % step === 0) ranges.push({ start: 0, end: 0, step: 1 });
      continue;
    }
    if (end < start) {
      const split = field === 'dayOfWeek' ? `${startText}-SAT,SUN-${endText}` : `${startText}-${bounds.max},${bounds.min}-${endText}`;
      return { ok: false, message: `the range "${part}" runs backwards; split it, e.g. "${split}"` };
    }
    ranges.push({ start, end, step });
  }
  return { ok: true, ranges };
}

function fieldValue(field: CalendarFieldName, text: string): number | null {
  const { min, max } = BOUNDS[field];
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (field === 'dayOfWeek' && n === 7) return 0;
    return n >= min && n <= max ? n : null;
  }
  const upper = text.toUpperCase();
  const names = field === 'month' ? MONTH_NAMES : field === 'dayOfWeek' ? WEEKDAY_NAMES : null;
  if (!names) return null;
  // Full names or their first three letters (cron's JAN, SAT).
  const index = names.findIndex((name) => name === upper || (upper.length === 3 && name.startsWith(upper)));
  if (index < 0) return null;
  return field === 'month' ? index + 1 : index;
}

/** The calendar fields of a five-field cron string, for the same parser as `calendar:`. */
export function cronFields(cron: string): Record<CalendarFieldName, string> | null {
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== 5) return null;
  const [minute, hour, dayOfMonth, month, dayOfWeek] = fields as [string, string, string, string, string];
  return { minute, hour, dayOfMonth, month, dayOfWeek };
}

/** Parses every field, or returns the problems keyed by field. */
export function parseCalendar(fields: Record<CalendarFieldName, number | string>): { ok: true; calendar: ParsedCalendar } | { ok: false; problems: { field: CalendarFieldName; message: string }[] } {
  const calendar = {} as ParsedCalendar;
  const problems: { field: CalendarFieldName; message: string }[] = [];
  for (const field of CALENDAR_FIELDS) {
    const parsed = parseCalendarField(field, fields[field]);
    if (parsed.ok) calendar[field] = parsed.ranges;
    else problems.push({ field, message: parsed.message });
  }
  return problems.length ? { ok: false, problems } : { ok: true, calendar };
}
