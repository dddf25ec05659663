/**
 * Completion of a pipe document from the JSON Schema the server generates from its component
 * registry: top-level keys, component names (inputs, actions, outputs), option keys and enum
 * values. Pure logic over the text and the cursor offset (no editor), so it is unit-tested.
 *
 * The YAML context is found by indentation, which is how pipes are written: walk up from the
 * cursor's line to the lines that hold its parent keys. Flow mappings on one line
 * (``- extract: {field: _raw, on-|``) are understood too.
 */

export type Schema = { [key: string]: any };

export interface ICompletion {
  label: string;
  type: 'keyword' | 'property' | 'enum' | 'function';
  detail?: string;
}

export interface ICompletionResult {
  from: number;
  options: ICompletion[];
}

const KIND_OF: Record<string, string> = {
  input: 'input',
  actions: 'action',
  output: 'output',
  errors: 'output'
};

/** Follow ``$ref`` and pick the object branch of ``anyOf``: the schema that has properties. */
export function resolve(schema: Schema | undefined, root: Schema): Schema | undefined {
  let s = schema;
  for (let i = 0; s && i < 10; i++) {
    if (typeof s.$ref === 'string') {
      const name = s.$ref.split('/').pop() as string;
      s = root.$defs?.[name];
      continue;
    }
    const branches = s.anyOf ?? s.oneOf;
    if (Array.isArray(branches)) {
      const objectish = branches.find(
        (b: Schema) => b.properties || b.$ref || b.enum || b.anyOf
      );
      if (objectish && objectish !== s) {
        s = objectish;
        continue;
      }
    }
    return s;
  }
  return s;
}

/** The enum values a property allows (also inside ``anyOf`` with null). */
export function enumOf(schema: Schema | undefined, root: Schema): unknown[] {
  const s = resolve(schema, root);
  if (!s) {
    return [];
  }
  if (Array.isArray(s.enum)) {
    return s.enum.filter((v: unknown) => v !== null);
  }
  if (s.const !== undefined) {
    return [s.const];
  }
  return [];
}

export function componentNames(schema: Schema, kind: string): ICompletion[] {
  const out: ICompletion[] = [];
  for (const [key, def] of Object.entries<Schema>(schema.$defs ?? {})) {
    if (key.startsWith(kind + '.')) {
      out.push({ label: key.slice(kind.length + 1), type: 'function', detail: def.description });
    }
  }
  return out;
}

/** The options schema of one component (``kind.name`` in ``$defs``). */
export function componentOptions(schema: Schema, kind: string, name: string): Schema | undefined {
  const def = schema.$defs?.[`${kind}.${name}`];
  if (!def) {
    return undefined;
  }
  return resolve(def.properties?.[name], schema);
}

function keysOf(s: Schema | undefined): ICompletion[] {
  return Object.entries<Schema>(s?.properties ?? {}).map(([k, v]) => ({
    label: k,
    type: 'property' as const,
    detail: typeof v.description === 'string' ? v.description.split('\n')[0] : undefined
  }));
}

/** The schema of the mapping at ``path`` (keys from the top), or undefined. */
export function schemaAt(schema: Schema, path: string[]): Schema | undefined {
  if (!path.length) {
    return schema;
  }
  const [top, comp, ...rest] = path;
  const kind = KIND_OF[top];
  if (!kind) {
    return undefined;
  }
  if (comp === undefined) {
    return undefined; // the component's own name is being written: see componentNames
  }
  let s = componentOptions(schema, kind, comp);
  for (const key of rest) {
    s = resolve(s?.properties?.[key], schema);
  }
  return s;
}

interface ILine {
  indent: number; // column of the key
  dash: number; // column of "- " or -1
  key: string | null;
}

function parseLine(line: string): ILine {
  const m = /^(\s*)(-\s+)?([\w.-]+)?\s*(:)?/.exec(line) as RegExpExecArray;
  const indent = m[1].length + (m[2] ? m[2].length : 0);
  return {
    indent,
    dash: m[2] ? m[1].length : -1,
    key: m[3] !== undefined && m[4] ? m[3] : null
  };
}

/** The keys that enclose a line whose content starts at column ``indent``. */
export function parentPath(lines: string[], index: number, indent: number): string[] {
  const path: string[] = [];
  let limit = indent;
  for (let i = index - 1; i >= 0 && limit > 0; i--) {
    const text = lines[i];
    if (!text.trim() || text.trim().startsWith('#')) {
      continue;
    }
    const l = parseLine(text);
    if (l.indent < limit && l.key !== null) {
      path.unshift(l.key);
      limit = l.dash >= 0 ? l.dash : l.indent;
    } else if (l.dash >= 0 && l.dash < limit) {
      limit = l.dash; // a list item whose first key is not a parent of ours
    }
  }
  return path;
}

function filter(options: ICompletion[], prefix: string): ICompletion[] {
  return options.filter(o => o.label.startsWith(prefix));
}

export function complete(schema: Schema, text: string, offset: number): ICompletionResult | null {
  const before = text.slice(0, offset);
  const lineStart = before.lastIndexOf('\n') + 1;
  const prefix = before.slice(lineStart);
  const lines = text.split('\n');
  const index = before.split('\n').length - 1;

  // a flow mapping on this line: "- extract: {field: _raw, on-"
  const flow = /^\s*(?:-\s+)?([\w-]+):\s*\{([^}]*)$/.exec(prefix);
  if (flow) {
    const l = parseLine(prefix);
    const path = [...parentPath(lines, index, l.dash >= 0 ? l.dash + 1 : l.indent), flow[1]];
    const s = schemaAt(schema, path);
    const inner = flow[2];
    const value = /([\w-]+):\s*([\w-]*)$/.exec(inner);
    if (value && /[:]\s*[\w-]*$/.test(inner)) {
      const values = enumOf(s?.properties?.[value[1]], schema).map(v => ({
        label: String(v),
        type: 'enum' as const
      }));
      return { from: offset - value[2].length, options: filter(values, value[2]) };
    }
    const word = /([\w-]*)$/.exec(inner) as RegExpExecArray;
    return { from: offset - word[1].length, options: filter(keysOf(s), word[1]) };
  }

  // "key: val" on a block line: enum values of key
  const kv = /^(\s*)(-\s+)?([\w-]+):\s+([\w-]*)$/.exec(prefix);
  if (kv) {
    const indent = kv[1].length + (kv[2] ? kv[2].length : 0);
    const path = parentPath(lines, index, kv[2] ? kv[1].length + 1 : indent);
    if (!path.length) {
      return null;
    }
    if (kv[2]) {
      // "- parse: js": a shorthand value of an action has no enum list here
      return null;
    }
    const s = schemaAt(schema, path);
    const values = enumOf(s?.properties?.[kv[3]], schema).map(v => ({
      label: String(v),
      type: 'enum' as const
    }));
    return values.length ? { from: offset - kv[4].length, options: filter(values, kv[4]) } : null;
  }

  // a key being written: "  on-m" or "  - ext"
  const key = /^(\s*)(-\s+)?([\w-]*)$/.exec(prefix);
  if (!key) {
    return null;
  }
  const indent = key[1].length + (key[2] ? key[2].length : 0);
  const path = parentPath(lines, index, key[2] ? key[1].length + 1 : indent);
  const word = key[3];
  const from = offset - word.length;
  let options: ICompletion[];
  if (!path.length) {
    options = keysOf(schema).map(o => ({ ...o, type: 'keyword' as const }));
  } else if (path.length === 1 && KIND_OF[path[0]]) {
    options = componentNames(schema, KIND_OF[path[0]]);
  } else {
    options = keysOf(schemaAt(schema, path));
  }
  return { from, options: filter(options, word) };
}
