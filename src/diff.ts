/**
 * A line diff of two texts (the server's stored version and the editor's), in unified form.
 * Small inputs only (pipe documents): a plain LCS table is fast enough and has no dependency.
 */

export interface IDiffLine {
  op: ' ' | '-' | '+';
  text: string;
}

export function diffLines(a: string, b: string): IDiffLine[] {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: IDiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) {
      out.push({ op: ' ', text: x[i] });
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push({ op: '-', text: x[i++] });
    } else {
      out.push({ op: '+', text: y[j++] });
    }
  }
  while (i < n) {
    out.push({ op: '-', text: x[i++] });
  }
  while (j < m) {
    out.push({ op: '+', text: y[j++] });
  }
  return out;
}

/** ``--- a`` / ``+++ b`` and the changed lines with ``context`` lines around them. */
export function unifiedDiff(a: string, b: string, nameA: string, nameB: string, context = 3): string {
  const lines = diffLines(a, b);
  if (lines.every(l => l.op === ' ')) {
    return '';
  }
  const keep = lines.map(() => false);
  lines.forEach((l, k) => {
    if (l.op !== ' ') {
      for (let c = Math.max(0, k - context); c <= Math.min(lines.length - 1, k + context); c++) {
        keep[c] = true;
      }
    }
  });
  const out = [`--- ${nameA}`, `+++ ${nameB}`];
  let skipping = false;
  lines.forEach((l, k) => {
    if (keep[k]) {
      out.push(l.op + l.text);
      skipping = false;
    } else if (!skipping) {
      out.push('@@');
      skipping = true;
    }
  });
  return out.join('\n');
}
