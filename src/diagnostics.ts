/**
 * The server's problems (1-based line:col) as ranges in the editor's text: pure logic, so it is
 * unit-tested without a browser. A problem names a position, not a span, so the underline covers
 * the token that starts there (a key, a word, a quoted string) or, at the end of a line, the
 * character before it; problems without a position (line 0) mark the first line.
 */

export interface IProblem {
  line: number;
  column: number;
  message: string;
  path?: string;
}

export interface IRange {
  from: number;
  to: number;
  line: number;
  column: number;
  message: string;
}

/** Offsets where each line starts. */
export function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\n') {
      starts.push(i + 1);
    }
  }
  return starts;
}

/** The end of the token that starts at ``offset`` (not past ``lineEnd``). */
export function tokenEnd(text: string, offset: number, lineEnd: number): number {
  if (offset >= lineEnd) {
    return lineEnd;
  }
  const first = text[offset];
  if (first === '"' || first === "'") {
    const close = text.indexOf(first, offset + 1);
    return close >= 0 && close < lineEnd ? close + 1 : lineEnd;
  }
  let end = offset;
  while (end < lineEnd && !/[\s:,{}[\]]/.test(text[end])) {
    end++;
  }
  return end > offset ? end : Math.min(offset + 1, lineEnd);
}

export function problemRanges(text: string, problems: IProblem[]): IRange[] {
  const starts = lineStarts(text);
  return problems.map(p => {
    const lineNo = Math.min(Math.max(p.line, 1), starts.length);
    const start = starts[lineNo - 1];
    const lineEnd = lineNo < starts.length ? starts[lineNo] - 1 : text.length;
    const col = p.line > 0 ? Math.max(p.column, 1) : 1;
    let from = Math.min(start + col - 1, lineEnd);
    let to = tokenEnd(text, from, lineEnd);
    if (to === from) {
      // an empty line or the end of one: mark the character before, if any
      from = Math.max(start, from - 1);
      to = Math.max(to, Math.min(from + 1, text.length));
    }
    return { from, to, line: p.line, column: p.column, message: p.message };
  });
}
