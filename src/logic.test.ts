/** Unit tests of the frontend's pure logic (run by `jlpm test`, vitest, in `make test`). */
import { describe, expect, it } from 'vitest';

import { complete, Schema } from './completion';
import { lineStarts, problemRanges } from './diagnostics';
import { unifiedDiff } from './diff';
import {
  buildFields,
  collectValues,
  matchingAgents,
  parseAssignments,
  splitList
} from './paramsform';
import { instanceRate } from './rates';
import { tapMagic } from './magic';

const DOC = 'name: t\ninput: {echo: {}}\nactions:\n  - fliter: x > 1\noutput: {discard: {}}\n';

describe('problemRanges', () => {
  it('underlines the token at line:col', () => {
    const [r] = problemRanges(DOC, [{ line: 4, column: 5, message: 'unknown action' }]);
    expect(DOC.slice(r.from, r.to)).toBe('fliter');
    expect(r.line).toBe(4);
  });

  it('underlines a quoted string whole and stays on its line', () => {
    const text = 'a: "one two" x\nb: 1';
    const [r] = problemRanges(text, [{ line: 1, column: 4, message: 'm' }]);
    expect(text.slice(r.from, r.to)).toBe('"one two"');
  });

  it('marks something at the end of a line and for unknown positions', () => {
    const text = 'name: t\n\nx: 1';
    const [end, none, past] = problemRanges(text, [
      { line: 1, column: 8, message: 'end' },
      { line: 0, column: 0, message: 'no position' },
      { line: 99, column: 1, message: 'past the end' }
    ]);
    expect(end.to).toBeGreaterThan(end.from);
    expect(end.to).toBeLessThanOrEqual(lineStarts(text)[1]);
    expect(text.slice(none.from, none.to)).toBe('name');
    expect(past.from).toBeGreaterThanOrEqual(lineStarts(text)[2]);
  });
});

const SCHEMA: Schema = {
  properties: { name: {}, input: {}, actions: {}, output: {}, tests: {} },
  $defs: {
    'action.extract': {
      description: 'regex fields',
      properties: {
        extract: {
          anyOf: [
            {
              properties: {
                field: { type: 'string' },
                'on-miss': { anyOf: [{ enum: ['keep', 'drop', 'error'] }, { type: 'null' }] },
                multiline: { $ref: '#/$defs/Multi' }
              }
            },
            { type: ['string'] }
          ]
        }
      }
    },
    'action.filter': { properties: { filter: { properties: { expr: {} } } } },
    'input.echo': { properties: { echo: { properties: { events: {}, interval: {} } } } },
    'output.discard': { properties: { discard: { properties: {} } } },
    Multi: { properties: { start: {}, 'max-lines': {} } }
  }
};

function at(text: string) {
  const offset = text.indexOf('|');
  return complete(SCHEMA, text.replace('|', ''), offset);
}

describe('complete', () => {
  it('offers top-level keys at column 0', () => {
    const r = at('name: t\nac|');
    expect(r?.options.map(o => o.label)).toEqual(['actions']);
  });

  it('offers action names in the actions list', () => {
    const r = at('actions:\n  - ext|');
    expect(r?.options.map(o => o.label)).toEqual(['extract']);
    expect(r?.from).toBe('actions:\n  - '.length);
  });

  it('offers input names under input', () => {
    expect(at('input:\n  e|')?.options.map(o => o.label)).toEqual(['echo']);
  });

  it('offers option keys of the enclosing component, block and flow style', () => {
    const block = at('actions:\n  - filter: x\n  - extract:\n      field: _raw\n      on|');
    expect(block?.options.map(o => o.label)).toEqual(['on-miss']);
    const flow = at('actions:\n  - extract: {field: _raw, on-|');
    expect(flow?.options.map(o => o.label)).toEqual(['on-miss']);
  });

  it('offers enum values, and keys of nested options through $ref', () => {
    const value = at('actions:\n  - extract:\n      on-miss: d|');
    expect(value?.options.map(o => o.label)).toEqual(['drop']);
    const flowValue = at('actions:\n  - extract: {on-miss: |');
    expect(flowValue?.options.map(o => o.label)).toEqual(['keep', 'drop', 'error']);
    const nested = at('actions:\n  - extract:\n      multiline:\n        ma|');
    expect(nested?.options.map(o => o.label)).toEqual(['max-lines']);
  });
});

describe('params form', () => {
  const params = [
    { name: 'level', default: 'error', enum: ['error', 'warn'] },
    { name: 'n', type: 'int', default: 3 },
    { name: 'ratio', type: 'float' },
    { name: 'on', type: 'bool', default: true },
    { name: 'out', required: true, description: 'where to write' }
  ];

  it('chooses a widget from type, enum and default', () => {
    const f = buildFields(params);
    expect(f.map(x => x.kind)).toEqual(['select', 'number', 'number', 'checkbox', 'text']);
    expect(f[0].options).toEqual(['error', 'warn']);
    expect(f[0].value).toBe('error');
    expect(f[1].step).toBe('1');
    expect(f[2].step).toBe('any');
    expect(f[3].checked).toBe(true);
    expect(f[4].required).toBe(true);
    expect(f[4].label).toBe('out: where to write');
  });

  it('types the values and names the missing ones', () => {
    const r = collectValues(params, { level: 'warn', n: '7', ratio: '', on: false, out: '' });
    expect(r.values).toEqual({ level: 'warn', n: 7, on: false });
    expect(r.missing).toEqual(['out']);
  });

  it('reads preview parameters as NAME=VALUE pieces', () => {
    expect(parseAssignments('level=warn, n = 3\nout=/tmp/x=y')).toEqual({
      level: 'warn',
      n: '3',
      out: '/tmp/x=y'
    });
    expect(parseAssignments('')).toEqual({});
    expect(parseAssignments('level')).toBe('"level" is not NAME=VALUE');
  });

  it('matches agents as the server places deployments', () => {
    const agents = [
      { id: 'a', labels: ['web', 'eu'] },
      { id: 'b', labels: ['web'] },
      { id: 'c', labels: [] }
    ];
    expect(matchingAgents(agents, [], ['web']).map(a => a.id)).toEqual(['a', 'b']);
    expect(matchingAgents(agents, [], splitList('web, eu')).map(a => a.id)).toEqual(['a']);
    expect(matchingAgents(agents, ['b', 'c'], ['web']).map(a => a.id)).toEqual(['b']);
    expect(matchingAgents(agents, [], []).length).toBe(3);
  });
});

describe('rates, diff and tap', () => {
  it('computes events per second between reports', () => {
    const first = instanceRate({ uptime_s: 10, input: { events: 100 }, output: { events: 50 } });
    expect(first?.inPerS).toBe(10);
    const next = instanceRate({ uptime_s: 12, input: { events: 140 }, output: { events: 60 } }, first!);
    expect(next?.inPerS).toBe(20);
    expect(next?.outPerS).toBe(5);
    expect(instanceRate(null)).toBeNull();
  });

  it('diffs texts line by line', () => {
    expect(unifiedDiff('a\nb\n', 'a\nb\n', 'x', 'y')).toBe('');
    const d = unifiedDiff('a\nb\nc', 'a\nB\nc', 'server', 'editor');
    expect(d.split('\n')).toEqual(['--- server', '+++ editor', ' a', '-b', '+B', ' c']);
  });

  it('writes the %pipe tap line', () => {
    expect(tapMagic('d-1', ' 2 ', 10)).toBe('%pipe tap d-1 --stage 2 --limit 10');
    expect(tapMagic('d-1', '', 5)).toBe('%pipe tap d-1 --limit 5');
  });
});

describe('asPreviewResult', () => {
  it("shows an agent's preview as the Preview tab's result, dead letters from _error", async () => {
    const { asPreviewResult } = await import('./agentpreview');
    const r = asPreviewResult({
      id: 'cmd-1',
      agent_id: 'web-3',
      state: 'done',
      error: null,
      result: {
        stages: [{ stage: 'input:files', in: 2, out: 2, dropped: 0, errors: 0, events: [{ a: 1 }, { a: 2 }] }],
        errors: [{ a: 3, _error: { stage: 'parse', message: 'bad' } }]
      }
    });
    expect(r.ok).toBe(true);
    expect(r.stages[0]).toMatchObject({ stage: 'input:files', events_in: 2, events_out: 2 });
    expect(r.errors).toEqual([{ stage: 'parse', message: 'bad', event: { a: 3 } }]);
    const refused = asPreviewResult({ id: 'c', agent_id: 'w', state: 'failed', error: "rule 'preview'", result: null });
    expect(refused.ok).toBe(false);
    expect(refused.error).toContain("rule 'preview'");
  });
});
