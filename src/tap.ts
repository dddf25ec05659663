/**
 * Tap: live events from one stage of a running deployment, in a main-area panel. Each round
 * queues a capture command and waits for the agents' answers (they travel with check-ins), then
 * shows the newest events; "pause" stops asking, "copy to notebook" inserts the ``%pipe tap``
 * line into the active notebook.
 */
import { Widget } from '@lumino/widgets';

import { api, IDeployment } from './handler';
import { tapMagic } from './magic';
import { el, eventsTable } from './tables';

export const MAX_ROWS = 200;
/** events asked for per round: an agent answers once it has seen that many */
export const ROUND = 5;

export class TapPanel extends Widget {
  constructor(
    private readonly dep: IDeployment,
    private readonly insert: (code: string) => boolean
  ) {
    super();
    this.id = `pipenb-tap-${dep.id}`;
    this.addClass('jp-pipenb-tap');
    this.title.label = `Tap ${dep.pipe} (${dep.id})`;
    this.title.closable = true;
    const bar = el('div', { class: 'jp-pipenb-tap-bar' });
    bar.appendChild(el('span', {}, 'Stage '));
    this.stage = el('select', { class: 'jp-pipenb-tap-stage' });
    this.stage.appendChild(el('option', { value: 'output' }, 'output'));
    bar.appendChild(this.stage);
    void this.loadStages();
    this.pauseButton = el('button', { class: 'jp-mod-styled jp-pipenb-tap-pause' }, 'Pause');
    this.pauseButton.onclick = () => this.togglePause();
    const clear = el('button', { class: 'jp-mod-styled' }, 'Clear');
    clear.onclick = () => {
      this.events = [];
      this.render();
    };
    const copy = el('button', { class: 'jp-mod-styled jp-pipenb-tap-copy' }, 'Copy to notebook');
    copy.onclick = () => {
      const code = tapMagic(dep.id, this.stage.value, 10);
      if (!this.insert(code)) {
        void navigator.clipboard?.writeText(code);
        this.status.textContent = `no notebook is open: copied "${code}" to the clipboard`;
      } else {
        this.status.textContent = `inserted "${code}" into the notebook`;
      }
    };
    bar.append(this.pauseButton, clear, copy);
    this.status = el('span', { class: 'jp-pipenb-muted jp-pipenb-tap-status' });
    bar.appendChild(this.status);
    this.node.appendChild(bar);
    this.table = el('div', { class: 'jp-pipenb-tap-events' });
    this.node.appendChild(this.table);
    this.stage.onchange = () => {
      this.events = [];
      this.render();
    };
    void this.loop();
  }

  /** The stages of the deployed version: input, each action (``2:extract``), output. */
  private async loadStages(): Promise<void> {
    try {
      const version = await api.pipe(this.dep.pipe, this.dep.resolved_version);
      const v = await api.validate(version.yaml ?? '');
      const actions = v.stages.slice(1);
      for (const name of ['input', ...actions]) {
        this.stage.appendChild(el('option', { value: name }, name));
      }
    } catch {
      // the stage list is a convenience: "output" still works
    }
  }

  private togglePause(): void {
    this.paused = !this.paused;
    this.pauseButton.textContent = this.paused ? 'Resume' : 'Pause';
    this.node.dataset.paused = String(this.paused);
    if (!this.paused) {
      void this.loop();
    }
  }

  private async loop(): Promise<void> {
    if (this.running) {
      return;
    }
    this.running = true;
    try {
      while (!this.paused && !this.isDisposed) {
        await this.round();
      }
    } finally {
      this.running = false;
    }
  }

  private async round(): Promise<void> {
    try {
      const stage = this.stage.value.trim() || undefined;
      const queued = (await api.command(this.dep.id, 'capture', stage, ROUND)).commands;
      if (!queued.length) {
        this.status.textContent = 'no agent runs this deployment now';
        await sleep(2000);
        return;
      }
      this.status.textContent = `waiting for ${queued.length} agent(s)…`;
      const deadline = Date.now() + 30000;
      const pending = new Set(queued.map(c => c.id));
      let delay = 200;
      while (pending.size && Date.now() < deadline && !this.isDisposed) {
        for (const id of [...pending]) {
          const c = await api.getCommand(id);
          if (c.result) {
            pending.delete(id);
            if (c.result.error) {
              this.status.textContent = `${c.agent_id}: ${c.result.error}`;
            }
            this.add(c.result.events ?? []);
          }
        }
        if (pending.size) {
          await sleep(delay);
          delay = Math.min(delay * 2, 1000);
        }
      }
      if (!this.isDisposed) {
        this.status.textContent = `${this.events.length} event(s) · ${new Date().toLocaleTimeString()}`;
      }
    } catch (error) {
      this.status.textContent = String(error);
      await sleep(2000);
    }
  }

  private add(events: any[]): void {
    if (this.paused || !events.length) {
      return;
    }
    this.events = [...events.reverse(), ...this.events].slice(0, MAX_ROWS);
    this.render();
  }

  private render(): void {
    this.table.textContent = '';
    this.table.appendChild(eventsTable(this.events));
    this.node.dataset.events = String(this.events.length);
  }

  private stage: HTMLSelectElement;
  private pauseButton: HTMLButtonElement;
  private status: HTMLElement;
  private table: HTMLElement;
  private events: any[] = [];
  private paused = false;
  private running = false;
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => window.setTimeout(resolve, ms));
}
