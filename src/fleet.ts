/**
 * The Fleet panel in the left sidebar: agents, pipes and deployments of this Jupyter server's
 * pipenb control plane, refreshed every few seconds while it is shown, with the actions on a
 * deployment (start, stop, upgrade, restart, reset checkpoint, delete, tap).
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { api, IAgent, IDeployment, IPipeSummary } from './handler';
import { pipeIcon } from './icon';
import { formatRate, instanceRate, IRate } from './rates';
import { el } from './tables';

export class FleetPanel extends Widget {
  constructor(
    private readonly interval: () => number,
    private readonly openTap: (dep: IDeployment) => void
  ) {
    super();
    this.id = 'pipenb-fleet';
    this.addClass('jp-pipenb-fleet');
    this.title.caption = 'pipenb fleet';
    this.title.icon = pipeIcon;
    const head = el('div', { class: 'jp-pipenb-fleet-head' });
    head.appendChild(el('h3', {}, 'pipenb fleet'));
    const refresh = el('button', { class: 'jp-mod-styled', title: 'Refresh now' }, '⟳');
    refresh.onclick = () => void this.refresh();
    head.appendChild(refresh);
    this.status = el('span', { class: 'jp-pipenb-muted jp-pipenb-fleet-status' });
    head.appendChild(this.status);
    this.node.appendChild(head);
    this.depsNode = this.section('Deployments', 'jp-pipenb-deployments');
    this.agentsNode = this.section('Agents', 'jp-pipenb-agents');
    this.pipesNode = this.section('Pipes', 'jp-pipenb-pipes');
  }

  private section(title: string, cls: string): HTMLElement {
    this.node.appendChild(el('h4', {}, title));
    const node = el('div', { class: cls });
    this.node.appendChild(node);
    return node;
  }

  protected onAfterShow(): void {
    void this.refresh();
    this.schedule();
  }

  protected onAfterHide(): void {
    this.stopTimer();
  }

  private schedule(): void {
    this.stopTimer();
    this.timer = window.setTimeout(async () => {
      await this.refresh();
      if (this.isVisible) {
        this.schedule();
      }
    }, this.interval() * 1000);
  }

  private stopTimer(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  async refresh(): Promise<void> {
    try {
      const [agents, pipes, deps] = await Promise.all([api.agents(), api.pipes(), api.deployments()]);
      this.renderDeployments(deps.deployments);
      this.renderAgents(agents.agents);
      this.renderPipes(pipes.pipes);
      this.status.textContent = `updated ${new Date().toLocaleTimeString()}`;
      this.node.dataset.refreshes = String(++this.refreshes);
    } catch (error) {
      this.status.textContent = String(error);
    }
  }

  private rateOf(dep: IDeployment): [number | null, number | null] {
    let inSum: number | null = null;
    let outSum: number | null = null;
    for (const s of dep.status) {
      if (s.state !== 'running') {
        continue;
      }
      const key = `${dep.id}/${s.agent_id}`;
      const r = instanceRate(s.metrics, this.rates.get(key));
      if (r) {
        this.rates.set(key, r);
        inSum = (inSum ?? 0) + r.inPerS;
        outSum = (outSum ?? 0) + r.outPerS;
      }
    }
    return [inSum, outSum];
  }

  private renderDeployments(deps: IDeployment[]): void {
    this.depsNode.textContent = '';
    if (!deps.length) {
      this.depsNode.appendChild(el('div', { class: 'jp-pipenb-muted' }, 'No deployments yet.'));
    }
    for (const d of deps) {
      const card = el('div', { class: 'jp-pipenb-dep', 'data-id': d.id, 'data-state': d.state });
      const running = d.status.filter(s => s.state === 'running').length;
      const [rin, rout] = this.rateOf(d);
      card.appendChild(el('div', { class: 'jp-pipenb-dep-title' }, `${d.pipe} v${d.resolved_version}`));
      card.appendChild(
        el(
          'div',
          { class: 'jp-pipenb-dep-line' },
          `${d.id} · ${d.state} · ${running}/${d.status.length} running`
        )
      );
      card.appendChild(
        el('div', { class: 'jp-pipenb-rate' }, `in ${formatRate(rin)}/s · out ${formatRate(rout)}/s`)
      );
      const errors = d.status.filter(s => s.error).map(s => `${s.agent_id}: ${s.error}`);
      if (errors.length) {
        card.appendChild(el('div', { class: 'jp-pipenb-error' }, errors.slice(0, 3).join('\n')));
      }
      const bar = el('div', { class: 'jp-pipenb-actions' });
      const act = (label: string, fn: () => Promise<unknown>, confirm?: string) => {
        const b = el('button', { class: 'jp-mod-styled', 'data-action': label }, label);
        b.onclick = async () => {
          if (confirm) {
            const ok = await showDialog({
              title: confirm,
              buttons: [Dialog.cancelButton(), Dialog.warnButton({ label })]
            });
            if (!ok.button.accept) {
              return;
            }
          }
          try {
            await fn();
            Notification.info(`${label}: ${d.id}`, { autoClose: 3000 });
          } catch (error) {
            Notification.error(`${label} ${d.id}: ${error}`, { autoClose: 8000 });
          }
          void this.refresh();
        };
        bar.appendChild(b);
      };
      if (d.running) {
        act('stop', () => api.stop(d.id));
      } else {
        act('start', () => api.start(d.id));
      }
      act('upgrade', () => api.upgrade(d.id, 'latest'));
      act('restart', () => api.command(d.id, 'restart'));
      act('reset checkpoint', () => api.command(d.id, 'reset-checkpoint'), `Reset the checkpoint of ${d.id}? Its input starts over.`);
      act('delete', () => api.deleteDeployment(d.id), `Delete deployment ${d.id}?`);
      const tap = el('button', { class: 'jp-mod-styled', 'data-action': 'tap' }, 'tap');
      tap.onclick = () => this.openTap(d);
      bar.appendChild(tap);
      card.appendChild(bar);
      this.depsNode.appendChild(card);
    }
  }

  private renderAgents(agents: IAgent[]): void {
    this.agentsNode.textContent = '';
    for (const a of agents) {
      const row = el('div', { class: 'jp-pipenb-agent', 'data-id': a.id, 'data-name': a.name, 'data-state': a.state });
      row.appendChild(el('b', {}, a.name && a.name !== a.id ? a.name : a.id));
      if (a.name && a.name !== a.id) {
        row.appendChild(el('span', { class: 'jp-pipenb-muted' }, ` ${a.id}`));
      }
      const version = a.attributes?.pipenb ? ` · pipenb ${a.attributes.pipenb}` : '';
      const seen = a.last_seen ? ` · seen ${new Date(a.last_seen).toLocaleTimeString()}` : '';
      row.appendChild(el('span', {}, ` ${a.state} · ${a.labels.join(', ') || 'no labels'}${version}${seen} · ${a.pipes} pipe(s)`));
      // its host's policy (what its pipes may touch) and the instances that policy refuses
      const disabled: string[] = a.attributes?.capabilities?.disabled ?? [];
      const policy = a.attributes?.policy;
      const bits: string[] = [];
      if (policy) {
        bits.push(`reads ${(policy.read ?? []).join(', ') || 'nothing'}`);
        bits.push(`writes ${(policy.write ?? []).join(', ') || 'nothing'}`);
      }
      if (disabled.length) {
        bits.push(`refuses ${disabled.join(', ')}`);
      }
      if (bits.length) {
        row.appendChild(el('div', { class: 'jp-pipenb-muted jp-pipenb-refuses' }, `policy: ${bits.join(' · ')}`));
      }
      if (a.refused) {
        row.appendChild(
          el('div', { class: 'jp-pipenb-error jp-pipenb-refused' }, `${a.refused} pipe(s) refused by its policy (see the deployment's status)`)
        );
      }
      this.agentsNode.appendChild(row);
    }
  }

  private renderPipes(pipes: IPipeSummary[]): void {
    this.pipesNode.textContent = '';
    for (const p of pipes) {
      const row = el('div', { class: 'jp-pipenb-pipe', 'data-name': p.name });
      row.appendChild(el('b', {}, p.name));
      const author = p.author ? ` by ${p.author}` : '';
      row.appendChild(el('span', {}, ` v${p.latest_version}${author} (${p.versions} version(s)) · ${p.deployments} deployment(s)`));
      const del = el('button', { class: 'jp-mod-styled', 'data-action': 'delete-pipe' }, 'delete');
      del.onclick = async () => {
        const ok = await showDialog({
          title: `Delete pipe ${p.name} and all its versions?`,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
        });
        if (ok.button.accept) {
          try {
            await api.deletePipe(p.name);
          } catch (error) {
            Notification.error(String(error), { autoClose: 8000 });
          }
          void this.refresh();
        }
      };
      row.appendChild(del);
      this.pipesNode.appendChild(row);
    }
  }

  dispose(): void {
    this.stopTimer();
    super.dispose();
  }

  private agentsNode: HTMLElement;
  private pipesNode: HTMLElement;
  private depsNode: HTMLElement;
  private status: HTMLElement;
  private timer: number | null = null;
  private refreshes = 0;
  private rates = new Map<string, IRate>();
}
