/**
 * Quoting for the two text formats the generator writes. Paths may hold spaces, quotes,
 * backslashes, "%" (a specifier in both formats) and non-ASCII text; control characters were
 * refused when the config was read. Each function skips its replacements when there is nothing
 * to replace (String.includes, cheaper than a regular expression), as these run a few times per
 * entry.
 */

/** A value in a unit file that takes one path verbatim (What=, Where=, SourcePath=, Description=). */
export function unitValue(text: string): string {
  return text.includes('%') ? text.replace(/%/g, '%%') : text;
}

/** One word in a unit-file list (RequiresMountsFor=) or command line (ExecStart=). */
export function unitWord(text: string): string {
  if (/^[A-Za-z0-9/_.:+,=@-]+$/.test(text)) return text;
  return '"' + text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\$/g, '$$$$') + '"';
}

/** One NAME=value assignment in Environment= (C-unescaped inside quotes, specifiers expanded, no $ expansion). */
export function unitEnv(name: string, value: string): string {
  const text = `${name}=${value}`;
  if (!text.includes('\\') && !text.includes('"') && !text.includes('%')) return '"' + text + '"';
  return '"' + text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%') + '"';
}

/**
 * The argument field of a tmpfiles.d line: the rest of the line, C-unescaped, specifiers expanded
 * (a symlink's target: left unescaped, "/srv/a\x41b" would link to "/srv/aAb", another entry's file).
 * A path cannot end in white space (refused when the config is read), which the line would lose.
 */
export function tmpfilesArgument(text: string): string {
  const escaped = text.includes('\\') ? text.replace(/\\/g, '\\\\') : text;
  return escaped.includes('%') ? escaped.replace(/%/g, '%%') : escaped;
}

/** The path field of a tmpfiles.d line (C-unescaped, specifiers expanded). */
export function tmpfilesPath(path: string): string {
  const escaped = path.includes('%') ? path.replace(/%/g, '%%') : path;
  if (/^[A-Za-z0-9/_.:+,=@%-]+$/.test(escaped)) return escaped;
  return '"' + escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}
