/** Events as an HTML table (columns: the union of the events' keys, in first-seen order). */

export function cell(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  if (typeof value === 'object') {
    return JSON.stringify(value);
  }
  return String(value);
}

export function columnsOf(events: any[]): string[] {
  const cols: string[] = [];
  const seen = new Set<string>();
  for (const e of events) {
    if (e && typeof e === 'object' && !Array.isArray(e)) {
      for (const k of Object.keys(e)) {
        if (!seen.has(k)) {
          seen.add(k);
          cols.push(k);
        }
      }
    }
  }
  return cols;
}

export function eventsTable(events: any[], className = 'jp-pipenb-events'): HTMLTableElement {
  const table = document.createElement('table');
  table.className = className;
  const cols = columnsOf(events);
  const head = table.createTHead().insertRow();
  for (const c of cols) {
    const th = document.createElement('th');
    th.textContent = c;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const e of events) {
    const row = body.insertRow();
    for (const c of cols) {
      row.insertCell().textContent = cell(e?.[c]);
    }
  }
  return table;
}

export function rowsTable(header: string[], rows: unknown[][], className: string): HTMLTableElement {
  const table = document.createElement('table');
  table.className = className;
  const head = table.createTHead().insertRow();
  for (const h of header) {
    const th = document.createElement('th');
    th.textContent = h;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const r of rows) {
    const row = body.insertRow();
    for (const v of r) {
      row.insertCell().textContent = cell(v);
    }
  }
  return table;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}
