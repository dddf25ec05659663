/**
 * The Preview tab: a sample (the pipe's own input, pasted lines, or a file from the Jupyter file
 * browser), then per-stage tabs with the events as a table and every stage's in/out/dropped/
 * errors counts, and the dead letters with their errors.
 */
import { Widget } from '@lumino/widgets';

import { previewOnAgent } from './agentpreview';
import { api, IPreviewResult } from './handler';
import { parseAssignments } from './paramsform';
import { el, eventsTable, rowsTable } from './tables';

export interface IPreviewHost {
  readonly text: string;
}

/** Where a file path for the sample comes from (the file browser's selection). */
export let pickFile: () => string | null = () => null;
export function setFilePicker(fn: () => string | null): void {
  pickFile = fn;
}

export class PreviewPanel extends Widget {
  constructor(
    private readonly host: IPreviewHost,
    private readonly sampleSize: () => number
  ) {
    super();
    this.addClass('jp-pipenb-preview');
    this.title.label = 'Preview';
    const form = el('div', { class: 'jp-pipenb-sample' });
    this.source = el('select', { class: 'jp-pipenb-sample-source' });
    for (const [value, label] of [
      ['input', "The pipe's own input"],
      ['lines', 'Pasted lines'],
      ['file', 'A file'],
      ['agent', 'Preview on agent…']
    ]) {
      this.source.appendChild(el('option', { value }, label));
    }
    this.lines = el('textarea', {
      class: 'jp-pipenb-sample-lines',
      rows: '5',
      placeholder: 'one sample line per line'
    });
    this.path = el('input', {
      class: 'jp-pipenb-sample-path',
      type: 'text',
      placeholder: 'path under the Jupyter root'
    });
    const pick = el('button', { class: 'jp-mod-styled' }, 'Use selected file');
    pick.onclick = () => {
      const p = pickFile();
      if (p) {
        this.path.value = p;
        this.source.value = 'file';
        this.sync();
      }
    };
    this.agent = el('input', {
      class: 'jp-pipenb-sample-agent',
      type: 'text',
      placeholder: "agent id: the pipe's own input, read on that agent (its policy must allow previews)"
    });
    this.pathRow = el('div', { class: 'jp-pipenb-path-row' });
    this.pathRow.append(this.path, pick);
    this.params = el('input', {
      class: 'jp-pipenb-preview-params',
      type: 'text',
      placeholder: 'parameters: name=value, ... (default: their defaults)'
    });
    const run = el('button', { class: 'jp-mod-styled jp-mod-accept jp-pipenb-run-preview' }, 'Run preview');
    run.onclick = () => void this.run();
    this.source.onchange = () => this.sync();
    form.append(this.source, this.lines, this.pathRow, this.agent, this.params, run);
    this.node.appendChild(form);
    this.output = el('div', { class: 'jp-pipenb-preview-output' });
    this.node.appendChild(this.output);
    this.sync();
  }

  /** Choose a sample file (the tests and the "Preview with" command use it). */
  useFile(path: string): void {
    this.path.value = path;
    this.source.value = 'file';
    this.sync();
  }

  private sync(): void {
    this.lines.style.display = this.source.value === 'lines' ? '' : 'none';
    this.pathRow.style.display = this.source.value === 'file' ? '' : 'none';
    this.agent.style.display = this.source.value === 'agent' ? '' : 'none';
  }

  get hasRun(): boolean {
    return this.ran;
  }

  async run(): Promise<IPreviewResult | null> {
    this.ran = true;
    this.output.textContent = 'Running…';
    const body: Parameters<typeof api.preview>[0] = {
      text: this.host.text,
      limit: this.sampleSize()
    };
    const params = parseAssignments(this.params.value);
    if (typeof params === 'string') {
      this.output.textContent = '';
      this.output.appendChild(el('div', { class: 'jp-pipenb-error' }, params));
      return null;
    }
    body.params = params;
    if (this.source.value === 'agent') {
      try {
        const r = await previewOnAgent(this.agent.value.trim(), {
          yaml: body.text,
          params,
          limit: Math.min(body.limit ?? 100, 1000),
          timeout: 10
        });
        this.render(r);
        return r;
      } catch (error) {
        this.output.textContent = '';
        this.output.appendChild(el('div', { class: 'jp-pipenb-error' }, String(error)));
        return null;
      }
    }
    if (this.source.value === 'lines') {
      body.lines = this.lines.value.split('\n').filter(l => l.length);
    } else if (this.source.value === 'file') {
      body.path = this.path.value.trim();
    }
    try {
      const r = await api.preview(body);
      this.render(r);
      return r;
    } catch (error) {
      this.output.textContent = '';
      this.output.appendChild(el('div', { class: 'jp-pipenb-error' }, String(error)));
      return null;
    }
  }

  render(r: IPreviewResult): void {
    this.node.dataset.runs = String(++this.runs); // which result is shown (for the tests)
    this.output.textContent = '';
    if (!r.ok) {
      const msg = r.error ?? `the pipe has ${r.problems.length} problem(s): see Problems`;
      this.output.appendChild(el('div', { class: 'jp-pipenb-error' }, msg));
      return;
    }
    this.output.appendChild(
      rowsTable(
        ['stage', 'in', 'out', 'dropped', 'errors'],
        r.stages.map(s => [s.stage, s.events_in, s.events_out, s.dropped, s.errors]),
        'jp-pipenb-counts'
      )
    );
    const tabs = el('div', { class: 'jp-pipenb-stage-tabs', role: 'tablist' });
    const pane = el('div', { class: 'jp-pipenb-stage-pane' });
    // a routed pipe: a tab per output after the stages (what each output received)
    const outputs = Object.entries(r.outputs ?? {});
    if (outputs.length) {
      this.output.appendChild(
        el(
          'div',
          { class: 'jp-pipenb-muted jp-pipenb-routes' },
          `outputs: ${outputs.map(([n, o]) => `${n} ${o.events.length}`).join(', ')}; unrouted ${r.unrouted ?? 0}`
        )
      );
    }
    const show = (i: number) => {
      tabs.querySelectorAll('button').forEach((b, k) => b.classList.toggle('jp-mod-current', k === i));
      pane.textContent = '';
      if (i > r.stages.length) {
        const [, o] = outputs[i - r.stages.length - 1];
        pane.appendChild(
          el('div', { class: 'jp-pipenb-muted' }, `${o.events.length} event(s)${o.truncated ? ' (first ones)' : ''}`)
        );
        pane.appendChild(eventsTable(o.events));
        return;
      }
      if (i === r.stages.length) {
        pane.appendChild(
          rowsTable(
            ['stage', 'error', 'event'],
            r.errors.map(e => [e.stage, e.message, e.event]),
            'jp-pipenb-dead-letters'
          )
        );
        return;
      }
      const s = r.stages[i];
      pane.appendChild(
        el('div', { class: 'jp-pipenb-muted' }, `${s.events.length} event(s)${s.truncated ? ' (first ones)' : ''}`)
      );
      pane.appendChild(eventsTable(s.events));
    };
    r.stages.forEach((s, i) => {
      const b = el('button', { class: 'jp-pipenb-stage-tab', role: 'tab', 'data-stage': s.stage }, s.stage);
      b.onclick = () => show(i);
      tabs.appendChild(b);
    });
    const dead = el('button', { class: 'jp-pipenb-stage-tab', role: 'tab', 'data-stage': 'dead-letters' }, `dead letters (${r.errors.length})`);
    dead.onclick = () => show(r.stages.length);
    tabs.appendChild(dead);
    outputs.forEach(([name], k) => {
      const b = el('button', { class: 'jp-pipenb-stage-tab', role: 'tab', 'data-output': name }, `→ ${name}`);
      b.onclick = () => show(r.stages.length + 1 + k);
      tabs.appendChild(b);
    });
    this.output.append(tabs, pane);
    show(r.stages.length - 1);
  }

  private source: HTMLSelectElement;
  private lines: HTMLTextAreaElement;
  private path: HTMLInputElement;
  private pathRow: HTMLElement;
  private agent: HTMLInputElement;
  private params: HTMLInputElement;
  private output: HTMLElement;
  private ran = false;
  private runs = 0;
}
