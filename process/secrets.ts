// Secrets must never leave the worker (DESIGN invariant 5). Every string that may reach a log, an
// error, a workflow result or the terminal passes through `scrubSecrets` first.

const registered = new Set<string>();

/** Remember a secret value so that it is masked wherever it would otherwise be printed. */
export function registerSecret(value: string | undefined): void {
  // Very short values would mask ordinary words; no real password or key is this short.
  if (value && value.length >= 4) registered.add(value);
}

const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)([^@\s]+)(@)/gi;
const KEYWORD_PASSWORD = /\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)('[^']*'|"[^"]*"|[^\s,;'"]+)/gi;

/** Masks registered secrets, passwords in connection URLs and `password=...` style pairs. */
export function scrubSecrets(text: string): string {
  let out = text;
  for (const secret of registered) {
    if (out.includes(secret)) out = out.split(secret).join('***');
  }
  return out.replace(URL_PASSWORD, '$1***$3').replace(KEYWORD_PASSWORD, '$1$2***');
}
