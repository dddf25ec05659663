/**
 * Events per second from the counters agents report (``uptime_s``, ``input.events``,
 * ``output.events``), as the notebook dashboard computes them: between two reports of one pipe
 * run, else the average since it started. Pure logic, unit-tested.
 */

export interface IRate {
  uptime: number;
  read: number;
  written: number;
  inPerS: number;
  outPerS: number;
}

export function instanceRate(metrics: Record<string, any> | null, before?: IRate): IRate | null {
  const uptime = metrics?.uptime_s;
  if (typeof uptime !== 'number' || uptime <= 0) {
    return null;
  }
  const read = Number(metrics?.input?.events ?? 0);
  const written = Number(metrics?.output?.events ?? 0);
  if (before && uptime === before.uptime) {
    return before;
  }
  if (before && uptime > before.uptime && read >= before.read) {
    const dt = uptime - before.uptime;
    return {
      uptime,
      read,
      written,
      inPerS: (read - before.read) / dt,
      outPerS: Math.max(0, written - before.written) / dt
    };
  }
  return { uptime, read, written, inPerS: read / uptime, outPerS: written / uptime };
}

export function formatRate(r: number | null | undefined): string {
  if (r === null || r === undefined) {
    return '–';
  }
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}
