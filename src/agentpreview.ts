/**
 * "Preview on agent…": the pipe runs on an agent's real data, under its policy, through the
 * pipenb server (POST agents/{id}/previews, then poll previews/{id}); the answer is turned into
 * the same shape as a preview run here, so the Preview tab shows it the same way.
 */
import { api, IAgentPreview, IPreviewResult } from './handler';

/** The agent's answer as a Preview tab result (dead letters from the events' `_error`). */
export function asPreviewResult(p: IAgentPreview): IPreviewResult {
  if (p.state !== 'done' || !p.result) {
    return { ok: false, problems: [], error: p.error ?? `the preview is ${p.state}`, stages: [], errors: [] };
  }
  return {
    ok: true,
    problems: [],
    error: null,
    stages: p.result.stages.map(s => ({
      stage: s.stage,
      events_in: s.in,
      events_out: s.out,
      dropped: s.dropped,
      errors: s.errors,
      events: s.events,
      truncated: false
    })),
    errors: p.result.errors.map(e => {
      const { _error, ...event } = e as { _error?: { stage?: string; message?: string } };
      return { stage: _error?.stage ?? '', message: _error?.message ?? '', event };
    })
  };
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/** Ask ``agent`` for a preview and wait for its answer (the input's timeout and 30 s more). */
export async function previewOnAgent(
  agent: string,
  body: { yaml: string; params: Record<string, unknown>; limit: number; timeout: number }
): Promise<IPreviewResult> {
  const queued = await api.previewOnAgent(agent, body);
  const deadline = Date.now() + (body.timeout + 30) * 1000;
  let delay = 50;
  for (;;) {
    const p = await api.agentPreview(queued.id);
    if (p.state !== 'pending') {
      return asPreviewResult(p);
    }
    if (Date.now() > deadline) {
      return asPreviewResult({ ...p, state: 'expired', error: `no answer from agent ${agent} in time (is it connected?)` });
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 500);
  }
}
