/**
 * The pipenb REST API under the Jupyter base URL, called through ``ServerConnection`` (so
 * Jupyter's token, cookie and XSRF header go with every request). One place knows the routes.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IProblem } from './diagnostics';
import { IParam } from './paramsform';

export const API_PATH = 'pipenb/api/v1';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string
  ) {
    super(message);
  }
}

export async function requestAPI<T>(
  path: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_PATH, path);
  const headers = new Headers(init.headers);
  if (init.body) {
    headers.set('Content-Type', 'application/json');
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { ...init, headers }, settings);
  } catch (error) {
    throw new ApiError(0, 'unreachable', `cannot reach the pipenb API: ${error}`);
  }
  const text = await response.text();
  let data: any = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = data?.error;
    throw new ApiError(
      response.status,
      err?.code ?? 'http_error',
      err?.message ?? `HTTP ${response.status} from ${path}`
    );
  }
  return data as T;
}

function post<T>(path: string, body: unknown = {}): Promise<T> {
  return requestAPI<T>(path, { method: 'POST', body: JSON.stringify(body) });
}

// ------------------------------------------------------------------ shapes (see openapi.json)
export interface IValidateResult {
  ok: boolean;
  problems: IProblem[];
  name: string | null;
  labels: string[];
  params: IParam[];
  stages: string[];
  tests: number;
}

export interface IStage {
  stage: string;
  events_in: number;
  events_out: number;
  dropped: number;
  errors: number;
  events: any[];
  truncated: boolean;
}

export interface IDeadLetter {
  stage: string;
  message: string;
  event: Record<string, unknown>;
}

export interface IPreviewResult {
  ok: boolean;
  problems: IProblem[];
  error: string | null;
  stages: IStage[];
  errors: IDeadLetter[];
  /** a pipe with `outputs:`: each output's events (after its own actions), by name */
  outputs?: Record<string, { events: any[]; truncated: boolean }>;
  /** events that matched no output's `when:` (and there was no default output) */
  unrouted?: number;
}

/** A preview on an agent (pipenb server: POST agents/{id}/previews, GET previews/{id}). */
export interface IAgentPreview {
  id: string;
  agent_id: string;
  state: 'pending' | 'done' | 'failed' | 'expired';
  error: string | null;
  result: {
    stages: { stage: string; in: number; out: number; dropped: number; errors: number; events: any[] }[];
    errors: Record<string, unknown>[];
  } | null;
}

export interface ICaseResult {
  name: string;
  passed: boolean;
  message: string;
  line: number;
  output: any[];
}

export interface ITestResult {
  ok: boolean;
  problems: IProblem[];
  error: string | null;
  passed: boolean;
  results: ICaseResult[];
}

export interface IAgent {
  id: string;
  name: string;
  labels: string[];
  attributes: Record<string, any>;
  state: string;
  last_seen: string | null;
  pipes: number;
  refused?: number;
}

export interface IInstance {
  agent_id: string;
  agent_state: string;
  state: string;
  error: string | null;
  metrics: Record<string, any> | null;
}

export interface IDeployment {
  id: string;
  pipe: string;
  version: number | 'latest';
  resolved_version: number;
  params: Record<string, unknown>;
  agents: string[];
  labels: string[];
  instances: number | 'all';
  failover: boolean;
  running: boolean;
  state: string;
  status: IInstance[];
}

export interface IPipeSummary {
  name: string;
  latest_version: number;
  versions: number;
  description: string;
  labels: string[];
  deployments: number;
  author?: string | null;
}

export interface IPipeVersion {
  pipe: string;
  version: number;
  message: string;
  created_at: string;
  yaml: string | null;
}

export interface ICommand {
  id: string;
  agent_id: string;
  result: { events?: any[]; error?: string } | null;
}

export interface IDeployRequest {
  pipe: string;
  version: number | 'latest';
  params: Record<string, unknown>;
  agents: string[];
  labels?: string[];
  instances: number | 'all';
  failover: boolean;
  start: boolean;
}

const seg = encodeURIComponent;

export const api = {
  validate: (text: string, params: Record<string, unknown> = {}, file = '<pipe>') =>
    post<IValidateResult>('authoring/validate', { text, params, file }),
  preview: (body: {
    text: string;
    lines?: string[] | null;
    path?: string | null;
    params?: Record<string, unknown>;
    limit?: number;
    timeout?: number;
  }) => post<IPreviewResult>('authoring/preview', body),
  previewOnAgent: (
    agent: string,
    body: { yaml: string; params: Record<string, unknown>; limit: number; timeout: number }
  ) => post<IAgentPreview>(`agents/${seg(agent)}/previews`, body),
  agentPreview: (id: string) => requestAPI<IAgentPreview>(`previews/${seg(id)}`),
  test: (text: string, params: Record<string, unknown> = {}) =>
    post<ITestResult>('authoring/test', { text, params }),
  schema: () => requestAPI<Record<string, any>>('authoring/schema'),

  pipes: () => requestAPI<{ pipes: IPipeSummary[] }>('pipes'),
  pipe: (name: string, version?: number) =>
    requestAPI<IPipeVersion>(`pipes/${seg(name)}` + (version ? `?version=${version}` : '')),
  push: (yaml: string, message: string) =>
    post<{ pipe: string; version: number; created: boolean }>('pipes', { yaml, message }),
  deletePipe: (name: string) => requestAPI<null>(`pipes/${seg(name)}`, { method: 'DELETE' }),

  agents: () => requestAPI<{ agents: IAgent[] }>('agents'),
  deployments: () => requestAPI<{ deployments: IDeployment[] }>('deployments'),
  deployment: (id: string) => requestAPI<IDeployment>(`deployments/${seg(id)}`),
  deploy: (body: IDeployRequest) => post<IDeployment>('deployments', body),
  start: (id: string) => post<IDeployment>(`deployments/${seg(id)}/start`),
  stop: (id: string) => post<IDeployment>(`deployments/${seg(id)}/stop`),
  upgrade: (id: string, version: number | 'latest' = 'latest') =>
    post<IDeployment>(`deployments/${seg(id)}/upgrade`, { version }),
  deleteDeployment: (id: string) =>
    requestAPI<null>(`deployments/${seg(id)}`, { method: 'DELETE' }),
  command: (id: string, type: string, stage?: string, limit = 10) =>
    post<{ commands: ICommand[] }>(`deployments/${seg(id)}/commands`, {
      type,
      stage: stage || undefined,
      limit
    }),
  getCommand: (id: string) => requestAPI<ICommand>(`commands/${seg(id)}`)
};
