/** The notebook line for a tap, as the ``%pipe`` magic reads it (pure, unit-tested). */
export function tapMagic(depId: string, stage: string, limit: number): string {
  const s = stage.trim() ? ` --stage ${stage.trim()}` : '';
  return `%pipe tap ${depId}${s} --limit ${limit}`;
}
