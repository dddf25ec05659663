/**
 * The Deploy dialog's form for a pipe's ``params:``: one field per parameter, its widget chosen
 * from the declared type and enum, prefilled with the default. Pure logic (no DOM), unit-tested.
 */

export interface IParam {
  name: string;
  type?: string | null;
  default?: unknown;
  required?: boolean;
  enum?: unknown[] | null;
  description?: string;
}

export type FieldKind = 'select' | 'checkbox' | 'number' | 'text';

export interface IField {
  name: string;
  kind: FieldKind;
  label: string;
  value: string;
  checked: boolean;
  options: string[];
  required: boolean;
  step?: string;
}

function typeOf(p: IParam): string {
  if (p.type) {
    return p.type;
  }
  const d = p.default;
  if (typeof d === 'boolean') {
    return 'bool';
  }
  if (typeof d === 'number') {
    return Number.isInteger(d) ? 'int' : 'float';
  }
  return 'str';
}

export function buildFields(params: IParam[]): IField[] {
  return params.map(p => {
    const type = typeOf(p);
    const hasDefault = p.default !== undefined && p.default !== null;
    const label = p.description ? `${p.name}: ${p.description}` : p.name;
    const base = {
      name: p.name,
      label,
      value: hasDefault ? String(p.default) : '',
      checked: p.default === true,
      options: [] as string[],
      required: Boolean(p.required) && !hasDefault
    };
    if (p.enum && p.enum.length) {
      return { ...base, kind: 'select' as FieldKind, options: p.enum.map(String) };
    }
    if (type === 'bool') {
      return { ...base, kind: 'checkbox' as FieldKind };
    }
    if (type === 'int' || type === 'float') {
      return { ...base, kind: 'number' as FieldKind, step: type === 'int' ? '1' : 'any' };
    }
    return { ...base, kind: 'text' as FieldKind };
  });
}

export interface IFormResult {
  values: Record<string, unknown>;
  missing: string[];
}

/**
 * The values to send: only those the user set or that differ from nothing (the server fills
 * defaults); typed as declared. ``raw`` maps names to the inputs' text (or booleans).
 */
export function collectValues(
  params: IParam[],
  raw: Record<string, string | boolean>
): IFormResult {
  const values: Record<string, unknown> = {};
  const missing: string[] = [];
  for (const p of params) {
    const type = typeOf(p);
    const v = raw[p.name];
    if (typeof v === 'boolean') {
      values[p.name] = v;
      continue;
    }
    if (v === undefined || v === '') {
      if (p.required && (p.default === undefined || p.default === null)) {
        missing.push(p.name);
      }
      continue;
    }
    if (p.enum && p.enum.length) {
      const match = p.enum.find(e => String(e) === v);
      values[p.name] = match === undefined ? v : match;
    } else if (type === 'int' || type === 'float') {
      const n = Number(v);
      values[p.name] = Number.isNaN(n) ? v : n;
    } else {
      values[p.name] = v;
    }
  }
  return { values, missing };
}

/** Labels typed as "a, b c" become ["a", "b", "c"]. */
export function splitList(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map(s => s.trim())
    .filter(Boolean);
}

/**
 * Agents a target matches, as the server places a deployment: one of the ids (when any are
 * given) and carrying every label.
 */
export function matchingAgents<A extends { id: string; labels: string[] }>(
  agents: A[],
  ids: string[],
  labels: string[]
): A[] {
  return agents.filter(
    a => (!ids.length || ids.includes(a.id)) && labels.every(l => a.labels.includes(l))
  );
}

/**
 * ``level=error, n=3`` (commas or new lines between) as ``{level: "error", n: "3"}``: the values
 * stay strings, the server converts them to the declared types. A piece without ``=`` is an
 * error naming it.
 */
export function parseAssignments(text: string): Record<string, string> | string {
  const out: Record<string, string> = {};
  for (const piece of text.split(/[,\n]/)) {
    const p = piece.trim();
    if (!p) {
      continue;
    }
    const eq = p.indexOf('=');
    if (eq <= 0) {
      return `"${p}" is not NAME=VALUE`;
    }
    out[p.slice(0, eq).trim()] = p.slice(eq + 1).trim();
  }
  return out;
}
