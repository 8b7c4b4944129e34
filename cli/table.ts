/**
 * What a node controls (its status, errors, name) reaches a terminal here:
 * control characters, escape sequences and line breaks are shown as \u
 * escapes, never acted on, so no row can forge another or repaint the screen.
 */
export function printable(text: string): string {
  // C0 and C1 controls, DEL, and the Unicode line and paragraph separators
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A plain text table: header, then rows, columns padded to their widest cell; every cell made printable. */
export function table(header: string[], rawRows: string[][]): string {
  const rows = rawRows.map((r) => r.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}
