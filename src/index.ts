/**
 * pipenb in JupyterLab: the Pipe Editor for pipe files, the Fleet panel, a launcher card, palette
 * commands, YAML highlighting in ``%%pipe`` cells and the settings that tune them.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { PathExt } from '@jupyterlab/coreutils';
import { IDocumentWidget } from '@jupyterlab/docregistry';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { watchPipeCells } from './cellmode';
import { DEFAULT_SETTINGS, FACTORY, IPipenbSettings, PipeEditor, PipeEditorFactory } from './editor';
import { FleetPanel } from './fleet';
import { pipeIcon } from './icon';
import { IDeployment } from './handler';
import { setFilePicker } from './preview';
import { TapPanel } from './tap';
import { PIPE_TEMPLATE } from './template';

const PLUGIN_ID = 'pipenb:plugin';
const FILE_TYPE = 'pipenb-pipe';

namespace CommandIDs {
  export const newPipe = 'pipenb:new-pipe';
  export const openFleet = 'pipenb:open-fleet';
  export const preview = 'pipenb:preview';
  export const runTests = 'pipenb:run-tests';
  export const deploy = 'pipenb:deploy';
  export const diff = 'pipenb:diff';
  export const save = 'pipenb:save-to-server';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'pipenb: a Pipe Editor and a Fleet panel',
  autoStart: true,
  requires: [IEditorServices],
  optional: [
    ILauncher,
    ICommandPalette,
    ISettingRegistry,
    INotebookTracker,
    IDefaultFileBrowser,
    ILayoutRestorer
  ],
  activate: (
    app: JupyterFrontEnd,
    editorServices: IEditorServices,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    notebooks: INotebookTracker | null,
    browser: IDefaultFileBrowser | null,
    restorer: ILayoutRestorer | null
  ) => {
    const settings: IPipenbSettings = { ...DEFAULT_SETTINGS };
    if (settingRegistry) {
      void settingRegistry
        .load(PLUGIN_ID)
        .then(s => {
          const read = () => {
            settings.refreshInterval = Math.max(0.5, Number(s.get('refreshInterval').composite));
            settings.sampleSize = Math.max(1, Number(s.get('sampleSize').composite));
            settings.validateDelay = Math.max(0, Number(s.get('validateDelay').composite));
          };
          read();
          s.changed.connect(read);
        })
        .catch(reason => console.warn('pipenb: settings not loaded', reason));
    }
    const current = () => settings;

    // ---------------------------------------------------------------- the Pipe Editor
    app.docRegistry.addFileType({
      name: FILE_TYPE,
      displayName: 'Pipe',
      extensions: ['.pipe.yaml', '.pipe.yml'],
      mimeTypes: ['text/x-yaml'],
      icon: pipeIcon,
      fileFormat: 'text',
      contentType: 'file'
    });
    const yamlTypes = ['yaml'].filter(t => app.docRegistry.getFileType(t));
    const factory = new PipeEditorFactory(
      {
        name: FACTORY,
        label: 'Pipe Editor',
        fileTypes: [FILE_TYPE, ...yamlTypes],
        defaultFor: [FILE_TYPE],
        modelName: 'text'
      },
      editorServices,
      current
    );
    app.docRegistry.addWidgetFactory(factory);
    const tracker = new WidgetTracker<IDocumentWidget<PipeEditor>>({ namespace: 'pipenb-editor' });
    factory.widgetCreated.connect((_, widget) => {
      widget.context.pathChanged.connect(() => void tracker.save(widget));
      void tracker.add(widget);
    });
    if (restorer) {
      void restorer.restore(tracker, {
        command: 'docmanager:open',
        args: widget => ({ path: widget.context.path, factory: FACTORY }),
        name: widget => widget.context.path
      });
    }
    if (browser) {
      setFilePicker(() => {
        const item = browser.selectedItems().next();
        return item && !item.done && item.value.type !== 'directory' ? item.value.path : null;
      });
    }

    const editorCommand = (id: string, label: string, run: (e: PipeEditor) => Promise<unknown>) => {
      app.commands.addCommand(id, {
        label,
        isEnabled: () => tracker.currentWidget !== null,
        execute: () => {
          const w = tracker.currentWidget;
          return w ? run(w.content) : undefined;
        }
      });
      palette?.addItem({ command: id, category: 'pipenb' });
    };
    editorCommand(CommandIDs.preview, 'Preview Pipe', e => e.runPreview());
    editorCommand(CommandIDs.runTests, 'Run Pipe Tests', e => e.runTests());
    editorCommand(CommandIDs.deploy, 'Deploy Pipe…', e => e.deploy());
    editorCommand(CommandIDs.diff, 'Diff Pipe Against the Server', e => e.diff());
    editorCommand(CommandIDs.save, 'Save Pipe to the Server', e => e.saveToServer());

    app.commands.addCommand(CommandIDs.newPipe, {
      label: args => (args.isLauncher ? 'New Pipe' : 'New Pipe File'),
      caption: 'A new pipe file, opened in the Pipe Editor',
      icon: args => (args.isPalette ? undefined : pipeIcon),
      execute: async args => {
        const cwd = (args.cwd as string) ?? browser?.model.path ?? '';
        const model = await app.serviceManager.contents.newUntitled({
          path: cwd,
          type: 'file',
          ext: '.pipe.yaml'
        });
        // "untitled.pipe.yaml" may come back as "untitled.yaml" on some servers: keep ours
        let path = model.path;
        if (!path.endsWith('.pipe.yaml')) {
          const target = PathExt.join(PathExt.dirname(path), PathExt.basename(path, PathExt.extname(path)) + '.pipe.yaml');
          path = (await app.serviceManager.contents.rename(path, target)).path;
        }
        await app.serviceManager.contents.save(path, {
          type: 'file',
          format: 'text',
          content: PIPE_TEMPLATE
        });
        return app.commands.execute('docmanager:open', { path, factory: FACTORY });
      }
    });
    palette?.addItem({ command: CommandIDs.newPipe, category: 'pipenb' });
    launcher?.add({ command: CommandIDs.newPipe, category: 'Other', rank: 1 });

    // ---------------------------------------------------------------- the Fleet panel and tap
    const insertIntoNotebook = (code: string): boolean => {
      const panel = notebooks?.currentWidget;
      if (!panel) {
        return false;
      }
      NotebookActions.insertBelow(panel.content);
      const cell = panel.content.activeCell;
      cell?.model.sharedModel.setSource(code);
      app.shell.activateById(panel.id);
      return Boolean(cell);
    };
    const openTap = (dep: IDeployment) => {
      const id = `pipenb-tap-${dep.id}`;
      for (const w of app.shell.widgets('main')) {
        if (w.id === id) {
          app.shell.activateById(id);
          return;
        }
      }
      const content = new TapPanel(dep, insertIntoNotebook);
      const widget = new MainAreaWidget({ content });
      widget.id = id;
      widget.title.label = content.title.label;
      widget.title.closable = true;
      app.shell.add(widget, 'main', { mode: 'split-bottom' });
      app.shell.activateById(id);
    };
    const fleet = new FleetPanel(() => settings.refreshInterval, openTap);
    app.shell.add(fleet, 'left', { rank: 700 });
    restorer?.add(fleet, 'pipenb-fleet');
    app.commands.addCommand(CommandIDs.openFleet, {
      label: 'Show the pipenb Fleet Panel',
      execute: () => app.shell.activateById(fleet.id)
    });
    palette?.addItem({ command: CommandIDs.openFleet, category: 'pipenb' });

    // ---------------------------------------------------------------- %%pipe cells
    if (notebooks) {
      watchPipeCells(notebooks);
    }
  }
};

export default plugin;
