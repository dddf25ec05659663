/**
 * YAML highlighting for the body of ``%%pipe`` cells: a code cell whose source starts with the
 * magic gets the YAML mime type (the first line stays readable as YAML: a comment-like word);
 * when the magic goes away the notebook's own language comes back.
 */
import { Cell, ICellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

export const YAML_MIME = 'text/x-yaml';

export function isPipeCell(source: string): boolean {
  return /^%%pipe\b/.test(source);
}

function update(cell: Cell, panel: NotebookPanel): void {
  const model: ICellModel = cell.model;
  if (model.type !== 'code') {
    return;
  }
  const pipe = isPipeCell(model.sharedModel.getSource());
  cell.node.classList.toggle('jp-pipenb-pipe-cell', pipe);
  const lang = panel.content.codeMimetype;
  if (pipe && model.mimeType !== YAML_MIME) {
    model.mimeType = YAML_MIME;
  } else if (!pipe && model.mimeType === YAML_MIME) {
    model.mimeType = lang;
  }
}

export function watchPipeCells(tracker: INotebookTracker): void {
  const watch = (panel: NotebookPanel, cell: Cell | null) => {
    if (!cell || (cell as any).__pipenbWatched) {
      return;
    }
    (cell as any).__pipenbWatched = true;
    const model = cell.model;
    update(cell, panel);
    model.contentChanged.connect(() => update(cell, panel));
    model.mimeTypeChanged.connect(() => update(cell, panel)); // the kernel's language came
  };
  tracker.widgetAdded.connect((_, panel) => {
    void panel.revealed.then(() => {
      panel.content.widgets.forEach(c => watch(panel, c));
      panel.content.model?.cells.changed.connect(() => {
        panel.content.widgets.forEach(c => watch(panel, c));
      });
    });
  });
  tracker.activeCellChanged.connect((_, cell) => {
    if (tracker.currentWidget) {
      watch(tracker.currentWidget, cell);
    }
  });
}
