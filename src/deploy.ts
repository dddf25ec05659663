/**
 * The Deploy… dialog's body: the target (labels or agents, with the agents they match shown as
 * the user types), a form for the pipe's params built from their types, defaults and enums,
 * instances, failover and the version pin.
 */
import { Widget } from '@lumino/widgets';

import { api, IAgent, IDeployRequest, IValidateResult } from './handler';
import { buildFields, collectValues, matchingAgents, splitList } from './paramsform';
import { el } from './tables';

export class DeployForm extends Widget {
  constructor(
    private readonly pipe: IValidateResult,
    private readonly version: number
  ) {
    super();
    this.addClass('jp-pipenb-deploy');
    const form = el('form', { class: 'jp-pipenb-form' });
    form.onsubmit = e => e.preventDefault();

    this.labels = this.input(form, 'Labels (an agent must carry all)', 'jp-pipenb-labels');
    this.labels.value = pipe.labels.join(', ');
    this.agentIds = this.input(form, 'Agents (ids; empty: any)', 'jp-pipenb-agent-ids');
    this.matches = el('div', { class: 'jp-pipenb-matches' }, 'Matching agents: …');
    form.appendChild(this.matches);
    for (const i of [this.labels, this.agentIds]) {
      i.oninput = () => this.showMatches();
    }

    if (pipe.params.length) {
      form.appendChild(el('h4', {}, 'Parameters'));
    }
    for (const f of buildFields(pipe.params)) {
      const row = el('label', { class: 'jp-pipenb-field' });
      row.appendChild(el('span', {}, f.label + (f.required ? ' *' : '')));
      let input: HTMLInputElement | HTMLSelectElement;
      if (f.kind === 'select') {
        input = el('select', { name: f.name });
        for (const o of f.options) {
          input.appendChild(el('option', { value: o }, o));
        }
        input.value = f.value || f.options[0];
      } else {
        input = el('input', { name: f.name, type: f.kind === 'checkbox' ? 'checkbox' : f.kind });
        if (f.kind === 'checkbox') {
          input.checked = f.checked;
        } else {
          input.value = f.value;
          if (f.step) {
            input.setAttribute('step', f.step);
          }
        }
      }
      input.classList.add('jp-pipenb-param');
      row.appendChild(input);
      form.appendChild(row);
      this.params.set(f.name, input);
    }

    form.appendChild(el('h4', {}, 'Placement'));
    this.instances = this.input(form, 'Instances ("all" or a number)', 'jp-pipenb-instances');
    this.instances.value = 'all';
    const fo = el('label', { class: 'jp-pipenb-field' });
    fo.appendChild(el('span', {}, 'Failover (move to another matching agent when one is offline)'));
    this.failover = el('input', { type: 'checkbox', class: 'jp-pipenb-failover' });
    fo.appendChild(this.failover);
    form.appendChild(fo);
    const vr = el('label', { class: 'jp-pipenb-field' });
    vr.appendChild(el('span', {}, 'Version'));
    this.pin = el('select', { class: 'jp-pipenb-version' });
    this.pin.appendChild(el('option', { value: String(version) }, `pinned to v${version}`));
    this.pin.appendChild(el('option', { value: 'latest' }, 'latest (follows new versions)'));
    vr.appendChild(this.pin);
    form.appendChild(vr);
    this.node.appendChild(form);

    void api
      .agents()
      .then(r => {
        this.agents = r.agents;
        this.showMatches();
      })
      .catch(error => (this.matches.textContent = `Agents: ${error}`));
  }

  private input(form: HTMLElement, label: string, cls: string): HTMLInputElement {
    const row = el('label', { class: 'jp-pipenb-field' });
    row.appendChild(el('span', {}, label));
    const input = el('input', { type: 'text', class: cls });
    row.appendChild(input);
    form.appendChild(row);
    return input;
  }

  private showMatches(): void {
    const m = matchingAgents(this.agents, splitList(this.agentIds.value), splitList(this.labels.value));
    this.matches.textContent = '';
    this.matches.appendChild(el('span', {}, `Matching agents (${m.length}): `));
    for (const a of m) {
      this.matches.appendChild(
        // the name people gave it (the server assigns ids), the id on hover
        el(
          'span',
          { class: 'jp-pipenb-agent-chip', 'data-state': a.state, title: a.id },
          `${a.name && a.name !== a.id ? a.name : a.id} (${a.state})`
        )
      );
    }
  }

  /** The deploy request, or what is wrong with the form. */
  request(): IDeployRequest | string {
    const raw: Record<string, string | boolean> = {};
    for (const [name, input] of this.params) {
      raw[name] = input instanceof HTMLInputElement && input.type === 'checkbox' ? input.checked : input.value;
    }
    const { values, missing } = collectValues(this.pipe.params, raw);
    if (missing.length) {
      return `give a value for ${missing.join(', ')}`;
    }
    const inst = this.instances.value.trim() || 'all';
    if (inst !== 'all' && !/^\d+$/.test(inst)) {
      return 'instances is "all" or a whole number';
    }
    return {
      pipe: this.pipe.name as string,
      version: this.pin.value === 'latest' ? 'latest' : this.version,
      params: values,
      agents: splitList(this.agentIds.value),
      labels: splitList(this.labels.value),
      instances: inst === 'all' ? 'all' : Number(inst),
      failover: this.failover.checked,
      start: true
    };
  }

  private labels: HTMLInputElement;
  private agentIds: HTMLInputElement;
  private matches: HTMLElement;
  private instances: HTMLInputElement;
  private failover: HTMLInputElement;
  private pin: HTMLSelectElement;
  private params = new Map<string, HTMLInputElement | HTMLSelectElement>();
  private agents: IAgent[] = [];
}
