import { LabIcon } from '@jupyterlab/ui-components';

/** A pipe: two ends joined by a bar. */
export const pipeIcon = new LabIcon({
  name: 'pipenb:pipe',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" d="M2 8h6v3h8V8h6v8h-6v-3H8v3H2z"/></svg>'
});
