/**
 * The Pipe Editor: a document widget for pipe files. The left side is JupyterLab's own file
 * editor (CodeMirror 6, YAML) with the server's problems as underlines and completion from the
 * component schema; the right side has tabs for the problems list, the preview, the tests and
 * the deployment made from this file.
 */
import { autocompletion, CompletionContext, CompletionResult } from '@codemirror/autocomplete';
import { Diagnostic, lintGutter, setDiagnostics } from '@codemirror/lint';
import { Extension } from '@codemirror/state';
import { Dialog, InputDialog, Notification, showDialog } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { CodeMirrorEditor } from '@jupyterlab/codemirror';
import {
  ABCWidgetFactory,
  DocumentRegistry,
  DocumentWidget,
  IDocumentWidget
} from '@jupyterlab/docregistry';
import { FileEditor } from '@jupyterlab/fileeditor';
import { ToolbarButton } from '@jupyterlab/ui-components';
import { SplitPanel, TabPanel, Widget } from '@lumino/widgets';

import { complete, Schema } from './completion';
import { DeployForm } from './deploy';
import { problemRanges } from './diagnostics';
import { unifiedDiff } from './diff';
import { api, ApiError, IDeployment, IValidateResult } from './handler';
import { pipeIcon } from './icon';
import { PreviewPanel } from './preview';
import { el } from './tables';

export const FACTORY = 'Pipe Editor';

export interface IPipenbSettings {
  refreshInterval: number;
  sampleSize: number;
  validateDelay: number;
}

export const DEFAULT_SETTINGS: IPipenbSettings = {
  refreshInterval: 5,
  sampleSize: 200,
  validateDelay: 400
};

let schemaPromise: Promise<Schema> | null = null;

/** The component schema, fetched once per page. */
export function pipeSchema(): Promise<Schema> {
  if (!schemaPromise) {
    schemaPromise = api.schema().catch(error => {
      schemaPromise = null;
      throw error;
    });
  }
  return schemaPromise;
}

async function completionSource(ctx: CompletionContext): Promise<CompletionResult | null> {
  let schema: Schema;
  try {
    schema = await pipeSchema();
  } catch {
    return null;
  }
  const result = complete(schema, ctx.state.doc.toString(), ctx.pos);
  if (!result || (!result.options.length && !ctx.explicit)) {
    return null;
  }
  return {
    from: result.from,
    options: result.options.map(o => ({ label: o.label, type: o.type, detail: o.detail })),
    validFor: /^[\w-]*$/
  };
}

/** The problems list: one row per problem, click to go there. */
class ProblemsPanel extends Widget {
  constructor(private readonly goTo: (line: number, column: number) => void) {
    super();
    this.addClass('jp-pipenb-problems');
    this.title.label = 'Problems';
    this.render(null);
  }

  render(result: IValidateResult | null, error?: string): void {
    this.node.textContent = '';
    if (error) {
      this.node.appendChild(el('div', { class: 'jp-pipenb-error' }, error));
      return;
    }
    if (!result) {
      this.node.appendChild(el('div', { class: 'jp-pipenb-muted' }, 'Checking…'));
      return;
    }
    this.title.label = result.ok ? 'Problems' : `Problems (${result.problems.length})`;
    if (result.ok) {
      const stages = result.stages.join(' → ');
      this.node.appendChild(
        el('div', { class: 'jp-pipenb-ok' }, `No problems. ${result.name}: ${stages}`)
      );
      return;
    }
    const list = el('ul', { class: 'jp-pipenb-problem-list' });
    for (const p of result.problems) {
      const item = el('li', { class: 'jp-pipenb-problem', 'data-line': String(p.line) });
      item.appendChild(el('span', { class: 'jp-pipenb-where' }, `${p.line}:${p.column}`));
      item.appendChild(el('span', { class: 'jp-pipenb-message' }, ' ' + p.message));
      item.onclick = () => this.goTo(p.line, p.column);
      list.appendChild(item);
    }
    this.node.appendChild(list);
  }
}

/** The tests tab: each case passed or failed, and why. */
class TestsPanel extends Widget {
  constructor(private readonly editor: PipeEditor) {
    super();
    this.addClass('jp-pipenb-tests');
    this.title.label = 'Tests';
    const run = el('button', { class: 'jp-mod-styled jp-mod-accept jp-pipenb-run-tests' }, 'Run tests');
    run.onclick = () => void this.run();
    this.node.appendChild(run);
    this.output = el('div');
    this.node.appendChild(this.output);
  }

  async run(): Promise<void> {
    this.output.textContent = 'Running…';
    try {
      const r = await api.test(this.editor.text);
      this.output.textContent = '';
      if (!r.ok) {
        this.output.appendChild(
          el('div', { class: 'jp-pipenb-error' }, r.error ?? 'the pipe has problems: see Problems')
        );
        return;
      }
      const passed = r.results.filter(c => c.passed).length;
      this.output.appendChild(
        el(
          'div',
          { class: r.passed ? 'jp-pipenb-ok' : 'jp-pipenb-error' },
          `${passed}/${r.results.length} passed`
        )
      );
      const list = el('ul', { class: 'jp-pipenb-case-list' });
      for (const c of r.results) {
        const item = el('li', {
          class: 'jp-pipenb-case ' + (c.passed ? 'jp-mod-pass' : 'jp-mod-fail')
        });
        item.appendChild(el('b', {}, c.passed ? 'PASS' : 'FAIL'));
        item.appendChild(el('span', {}, ` ${c.name} (line ${c.line})`));
        if (!c.passed) {
          item.appendChild(el('pre', {}, c.message));
        }
        list.appendChild(item);
      }
      this.output.appendChild(list);
    } catch (error) {
      this.output.textContent = '';
      this.output.appendChild(el('div', { class: 'jp-pipenb-error' }, String(error)));
    }
  }

  private output: HTMLElement;
}

/** The deployment made from this editor, refreshed while shown. */
class DeploymentPanel extends Widget {
  constructor(private readonly interval: () => number) {
    super();
    this.addClass('jp-pipenb-deployment');
    this.title.label = 'Deployment';
    this.node.appendChild(el('div', { class: 'jp-pipenb-muted' }, 'Not deployed from here yet: Deploy…'));
  }

  follow(dep: IDeployment): void {
    this.depId = dep.id;
    this.show_(dep);
    if (this.timer === null) {
      this.timer = window.setInterval(() => void this.refresh(), this.interval() * 1000);
    }
  }

  async refresh(): Promise<void> {
    if (!this.depId) {
      return;
    }
    try {
      this.show_(await api.deployment(this.depId));
    } catch (error) {
      this.node.textContent = String(error);
    }
  }

  private show_(dep: IDeployment): void {
    this.node.textContent = '';
    this.node.appendChild(
      el('div', { class: 'jp-pipenb-dep-state', 'data-state': dep.state }, `${dep.id}: ${dep.state}`)
    );
    this.node.appendChild(
      el('div', {}, `${dep.pipe} v${dep.resolved_version} (${dep.version === 'latest' ? 'follows latest' : 'pinned'})`)
    );
    const list = el('ul');
    for (const s of dep.status) {
      list.appendChild(el('li', {}, `${s.agent_id}: ${s.state}${s.error ? ' — ' + s.error : ''}`));
    }
    this.node.appendChild(list);
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
    }
    super.dispose();
  }

  private depId: string | null = null;
  private timer: number | null = null;
}

export class PipeEditor extends SplitPanel {
  constructor(
    readonly context: DocumentRegistry.CodeContext,
    editorServices: IEditorServices,
    private readonly settings: () => IPipenbSettings
  ) {
    super({ orientation: 'horizontal' });
    this.addClass('jp-pipenb-editor');
    this.fileEditor = new FileEditor({
      factory: editorServices.factoryService.newDocumentEditor,
      context,
      mimeTypeService: editorServices.mimeTypeService
    });
    this.problems = new ProblemsPanel((line, column) => this.goTo(line, column));
    this.preview = new PreviewPanel(this, () => this.settings().sampleSize);
    this.tests = new TestsPanel(this);
    this.deployment = new DeploymentPanel(() => this.settings().refreshInterval);
    this.side = new TabPanel();
    this.side.addClass('jp-pipenb-side');
    for (const w of [this.problems, this.preview, this.tests, this.deployment]) {
      this.side.addWidget(w);
    }
    this.addWidget(this.fileEditor);
    this.addWidget(this.side);
    this.setRelativeSizes([3, 2]);

    void context.ready.then(() => {
      const cm = this.fileEditor.editor as CodeMirrorEditor;
      const extensions: Extension[] = [
        lintGutter(),
        autocompletion({ override: [completionSource], activateOnTyping: true })
      ];
      cm.injectExtension(extensions);
      context.model.contentChanged.connect(this.scheduleValidate, this);
      this.scheduleValidate();
    });
    context.fileChanged.connect(() => {
      if (this.preview.hasRun) {
        void this.preview.run(); // re-run on save
      }
    });
  }

  get text(): string {
    return this.context.model.toString();
  }

  get lastValidation(): IValidateResult | null {
    return this.validation;
  }

  get editorView() {
    return (this.fileEditor.editor as CodeMirrorEditor).editor;
  }

  showTab(which: 'problems' | 'preview' | 'tests' | 'deployment'): void {
    const w = { problems: this.problems, preview: this.preview, tests: this.tests, deployment: this.deployment }[which];
    this.side.currentWidget = w;
  }

  goTo(line: number, column: number): void {
    const ed = this.fileEditor.editor;
    ed.setCursorPosition({ line: Math.max(line - 1, 0), column: Math.max(column - 1, 0) });
    ed.focus();
  }

  scheduleValidate(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    this.node.dataset.checking = 'true'; // the tests (and styles) can tell a stale result
    this.timer = window.setTimeout(() => void this.validate(), this.settings().validateDelay);
  }

  async validate(): Promise<IValidateResult | null> {
    this.timer = null;
    const text = this.text;
    const seq = ++this.seq;
    let result: IValidateResult;
    try {
      result = await api.validate(text, {}, this.context.path);
    } catch (error) {
      this.problems.render(null, `Could not validate: ${error}`);
      return null;
    }
    if (seq !== this.seq || this.isDisposed) {
      return null; // a newer edit is being checked
    }
    this.validation = result;
    this.problems.render(result);
    const view = this.editorView;
    const doc = view.state.doc.toString();
    const ranges = doc === text ? problemRanges(doc, result.problems) : [];
    const diagnostics: Diagnostic[] = ranges.map(r => ({
      from: r.from,
      to: r.to,
      severity: 'error',
      message: `${r.line}:${r.column} ${r.message}`,
      source: 'pipenb'
    }));
    view.dispatch(setDiagnostics(view.state, diagnostics));
    this.node.dataset.problems = String(result.problems.length);
    if (this.timer === null) {
      this.node.dataset.checking = 'false';
    }
    return result;
  }

  async runTests(): Promise<void> {
    this.showTab('tests');
    await this.tests.run();
  }

  async runPreview(): Promise<void> {
    this.showTab('preview');
    await this.preview.run();
  }

  /** The name the pipe has in its text, or an error shown to the user. */
  private async pipeName(): Promise<string | null> {
    const v = await this.validate();
    if (!v?.ok || !v.name) {
      await showDialog({
        title: 'The pipe has problems',
        body: 'Fix the problems listed in the Problems tab first.',
        buttons: [Dialog.okButton()]
      });
      this.showTab('problems');
      return null;
    }
    return v.name;
  }

  async saveToServer(): Promise<number | null> {
    const name = await this.pipeName();
    if (!name) {
      return null;
    }
    const msg = await InputDialog.getText({
      title: `Save ${name} to the server`,
      label: 'Message',
      placeholder: 'what changed'
    });
    if (!msg.button.accept) {
      return null;
    }
    try {
      const r = await api.push(this.text, msg.value ?? '');
      Notification.success(
        r.created ? `Saved ${r.pipe} as version ${r.version}` : `${r.pipe} v${r.version} is already this text`,
        { autoClose: 4000 }
      );
      return r.version;
    } catch (error) {
      Notification.error(`Save failed: ${error}`, { autoClose: 8000 });
      return null;
    }
  }

  async diff(): Promise<void> {
    const name = await this.pipeName();
    if (!name) {
      return;
    }
    let stored = '';
    let label = `${name} (not on the server)`;
    try {
      const v = await api.pipe(name);
      stored = v.yaml ?? '';
      label = `${name} v${v.version} (server)`;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        Notification.error(String(error));
        return;
      }
    }
    const text = unifiedDiff(stored, this.text, label, this.context.path);
    const body = el('pre', { class: 'jp-pipenb-diff' });
    if (!text) {
      body.textContent = `The editor's text is the server's ${label}.`;
    }
    text.split('\n').forEach((line, i) => {
      const cls =
        i < 2 ? 'jp-mod-header' : line.startsWith('+') ? 'jp-mod-add' : line.startsWith('-') ? 'jp-mod-del' : '';
      body.appendChild(el('div', { class: cls }, line));
    });
    const widget = new Widget({ node: body });
    await showDialog({ title: `Diff: ${label}`, body: widget, buttons: [Dialog.okButton()] });
  }

  async deploy(): Promise<void> {
    const name = await this.pipeName();
    if (!name || !this.validation) {
      return;
    }
    let stored: number | null = null;
    try {
      stored = (await api.push(this.text, 'deployed from JupyterLab')).version;
    } catch (error) {
      Notification.error(`Could not store the pipe: ${error}`);
      return;
    }
    const form = new DeployForm(this.validation, stored);
    const result = await showDialog({
      title: `Deploy ${name} v${stored}`,
      body: form,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Deploy' })]
    });
    if (!result.button.accept) {
      form.dispose();
      return;
    }
    const req = form.request();
    form.dispose();
    if (typeof req === 'string') {
      Notification.error(req, { autoClose: 8000 });
      return;
    }
    try {
      const dep = await api.deploy(req);
      Notification.success(`Deployed ${dep.pipe} as ${dep.id}`, { autoClose: 4000 });
      this.deployment.follow(dep);
      this.showTab('deployment');
    } catch (error) {
      Notification.error(`Deploy failed: ${error}`, { autoClose: 8000 });
    }
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    super.dispose();
  }

  readonly fileEditor: FileEditor;
  private problems: ProblemsPanel;
  private preview: PreviewPanel;
  private tests: TestsPanel;
  private deployment: DeploymentPanel;
  private side: TabPanel;
  private timer: number | null = null;
  private seq = 0;
  private validation: IValidateResult | null = null;
}

export class PipeEditorFactory extends ABCWidgetFactory<
  IDocumentWidget<PipeEditor>,
  DocumentRegistry.ICodeModel
> {
  constructor(
    options: DocumentRegistry.IWidgetFactoryOptions<IDocumentWidget<PipeEditor>>,
    private readonly editorServices: IEditorServices,
    private readonly settings: () => IPipenbSettings
  ) {
    super(options);
  }

  protected createNewWidget(context: DocumentRegistry.CodeContext): IDocumentWidget<PipeEditor> {
    const content = new PipeEditor(context, this.editorServices, this.settings);
    const widget = new DocumentWidget({ content, context });
    widget.addClass('jp-pipenb-document');
    const actions: [string, string, string, () => Promise<unknown>][] = [
      ['preview', 'Preview', 'Run the pipe on a sample', () => content.runPreview()],
      ['tests', 'Run tests', "Run the pipe's tests: section", () => content.runTests()],
      ['deploy', 'Deploy…', 'Store this version and deploy it to agents', () => content.deploy()],
      ['diff', 'Diff', "Compare with the server's newest version", () => content.diff()],
      ['save', 'Save to server', 'Store this text as a new version', () => content.saveToServer()]
    ];
    for (const [id, label, tooltip, run] of actions) {
      widget.toolbar.addItem(
        `pipenb-${id}`,
        new ToolbarButton({ label, tooltip, className: `jp-pipenb-tb-${id}`, onClick: () => void run() })
      );
    }
    widget.title.icon = pipeIcon;
    return widget;
  }
}
