"""A live fleet view for notebooks: agents and deployments with their state and event rates.

``%pipe dashboard`` (or ``Dashboard(client)``) shows ipywidgets that refresh themselves from a
daemon thread, so the view stays current while other cells run; each deployment row has a
start/stop button. The thread only reads the server and swaps widget values (ipykernel sends
widget updates from any thread), and a lock keeps a button click and a refresh from
interleaving their requests on the one ``Client``.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from pipenb.errors import PipenbError
from pipenb.explain import no_match, recent_errors

STATE_COLOURS = {
    "online": "#2e7d32",
    "running": "#2e7d32",
    "degraded": "#ef6c00",
    "pending": "#757575",
    "starting": "#757575",
    "offline": "#c62828",
    "failed": "#c62828",
    "refused": "#c62828",
    "stopped": "#9e9e9e",
    "finished": "#1565c0",
}

TABLE_STYLE = (
    "<style>.pipenb-dash td,.pipenb-dash th{padding:2px 10px;text-align:left}"
    ".pipenb-dash th{border-bottom:1px solid #ccc}</style>"
)


def _state(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#000")
    return f"<span style='color:{colour}'>&#9679; {html.escape(state)}</span>"


@dataclass
class InstanceRate:
    """One instance's counters at its last report, and the rates they imply."""

    uptime: float
    read: int
    written: int
    in_per_s: float
    out_per_s: float


def instance_rate(metrics: dict[str, Any], before: InstanceRate | None) -> InstanceRate | None:
    """Rates from the counters an agent reported, timed by the pipe's own uptime.

    Agents report every few seconds, so successive refreshes often see the same report: then the
    rate is the one computed when it arrived. The first report (and the first after a restart,
    when uptime goes back) gives the average since the pipe started.
    """
    uptime = metrics.get("uptime_s")
    if not isinstance(uptime, (int, float)) or uptime <= 0:
        return None
    read = int((metrics.get("input") or {}).get("events") or 0)
    written = int((metrics.get("output") or {}).get("events") or 0)
    if before is not None and uptime == before.uptime:
        return before
    if before is not None and uptime > before.uptime and read >= before.read:
        dt = uptime - before.uptime
        return InstanceRate(
            uptime, read, written, (read - before.read) / dt, max(0, written - before.written) / dt
        )
    return InstanceRate(uptime, read, written, read / uptime, written / uptime)


class Dashboard:
    """Agents and deployments of one server, refreshed every ``interval`` seconds.

    Rates are computed from the counters agents report (every ``metrics_every`` seconds on the
    agent), so a rate moves in steps of that period, not of ``interval``.
    """

    def __init__(self, client: Any, interval: float = 5.0, autostart: bool = True):
        self.client = client
        self.interval = max(0.5, float(interval))
        self.refreshes = 0
        self.error: str | None = None
        self.agents: list[dict[str, Any]] = []
        self.deployments: list[dict[str, Any]] = []
        self.rates: dict[str, tuple[float, float] | None] = {}  # deployment: (in/s, out/s)
        self._instances: dict[tuple[str, str], InstanceRate] = {}
        self.errors: dict[str, list[str]] = {}  # deployment: its recent warning/error lines
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows: dict[str, tuple[w.HBox, w.HTML, w.Button]] = {}

        self.title = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.auto = w.ToggleButton(value=False, description="Auto-refresh", icon="clock-o")
        self.auto.observe(self._on_auto, names="value")
        self.agents_html = w.HTML()
        self.deployments_box = w.VBox()
        self.message = w.HTML()
        self.problem = w.HTML()
        self._empty = w.HTML("<i>no deployments</i>")
        self.widget = w.VBox(
            [
                self.title,
                self.problem,
                w.HBox([self.refresh_button, self.auto]),
                w.HTML("<b>Agents</b>"),
                self.agents_html,
                w.HTML("<b>Deployments</b>"),
                self.deployments_box,
                self.message,
            ]
        )
        self.refresh()
        if autostart:
            self.start()

    # ------------------------------------------------------------------ refreshing
    def refresh(self) -> None:
        """Fetch agents and deployments once and redraw; a server error is shown, not raised."""
        with self._lock:
            try:
                agents = self.client.agents()["agents"]
                deployments = self.client.deployments()["deployments"]
                detailed = [self.client.deployment(d["id"]) for d in deployments]
                errors = {d["id"]: self._recent_errors(d["id"]) for d in detailed}
            except (PipenbError, OSError) as exc:
                self.error = str(exc)
            else:
                self.error = None
                self.agents, self.deployments, self.errors = agents, detailed, errors
                self._update_rates()
            self.refreshes += 1
            self._render()

    def start(self) -> None:
        """Refresh in the background every ``interval`` seconds until ``stop()``."""
        self.auto.value = True

    def stop(self) -> None:
        """Stop refreshing in the background (the view stays, with its last data)."""
        self.auto.value = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _on_auto(self, change: dict[str, Any]) -> None:
        if change["new"]:
            if not self.running:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._loop, name="pipenb-dashboard", daemon=True
                )
                self._thread.start()
        else:
            self._stop.set()
            thread, self._thread = self._thread, None
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)
        self._render_title()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def _recent_errors(self, dep_id: str) -> list[str]:
        return recent_errors(self.client.logs(dep_id, limit=50)["logs"], limit=3)

    def _earlier(self, dep_id: str, agent_id: str, metrics: dict[str, Any]) -> InstanceRate | None:
        """The instance's counters at the newest point the server stored before ``metrics``.

        A dashboard drawn for the first time has no counters of its own to compare with: the
        average since the pipe started would show an idle pipe busy for as long as it lived.
        """
        uptime = metrics.get("uptime_s")
        if not isinstance(uptime, (int, float)):
            return None
        try:
            points = self.client.metrics(dep_id, agent=agent_id, limit=10)["metrics"]
        except (PipenbError, OSError):
            return None
        for point in reversed(points):
            data = point.get("data") or {}
            then = data.get("uptime_s")
            if isinstance(then, (int, float)) and 0 < then < uptime:
                return instance_rate(data, None)
        return None

    def _update_rates(self) -> None:
        seen: dict[tuple[str, str], InstanceRate] = {}
        rates: dict[str, tuple[float, float] | None] = {}
        for dep in self.deployments:
            total: tuple[float, float] | None = None
            for inst in dep.get("status") or []:
                key = (dep["id"], inst["agent_id"])
                before = self._instances.get(key)
                if before is None and inst.get("metrics"):
                    before = self._earlier(dep["id"], inst["agent_id"], inst["metrics"])
                rate = instance_rate(inst.get("metrics") or {}, before)
                if rate is None:
                    continue
                seen[key] = rate
                if inst.get("state") == "running":
                    t = total or (0.0, 0.0)
                    total = (t[0] + rate.in_per_s, t[1] + rate.out_per_s)
            rates[dep["id"]] = total
        self._instances, self.rates = seen, rates

    # ------------------------------------------------------------------ buttons
    def _toggle(self, dep_id: str) -> None:
        with self._lock:
            dep = next((d for d in self.deployments if d["id"] == dep_id), None)
            try:
                if dep is not None and dep.get("running"):
                    self.client.stop(dep_id)
                    done = f"stopped {dep_id}"
                else:
                    self.client.start(dep_id)
                    done = f"started {dep_id}"
            except (PipenbError, OSError) as exc:
                self.message.value = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
                return
            self.refresh()
            self.message.value = html.escape(done)

    # ------------------------------------------------------------------ drawing
    def _render(self) -> None:
        self._render_title()
        self.agents_html.value = self._agents_table()
        seen = set()
        rows = []
        for dep in self.deployments:
            dep_id = dep["id"]
            seen.add(dep_id)
            if dep_id not in self._rows:
                button = w.Button(layout=w.Layout(width="80px"))
                button.on_click(lambda _b, i=dep_id: self._toggle(i))
                label = w.HTML()
                self._rows[dep_id] = (w.HBox([button, label]), label, button)
            row, label, button = self._rows[dep_id]
            label.value = self._deployment_line(dep)
            button.description = "Stop" if dep.get("running") else "Start"
            button.button_style = "warning" if dep.get("running") else "success"
            rows.append(row)
        for gone in set(self._rows) - seen:
            for widget in self._rows.pop(gone):
                widget.close()
        self.deployments_box.children = rows or [self._empty]
        self.problem.value = (
            f"<span style='color:#c62828'>server: {html.escape(self.error)}</span>"
            if self.error
            else ""
        )

    def _render_title(self) -> None:
        url = html.escape(str(getattr(self.client, "url", "")))
        when = time.strftime("%H:%M:%S")
        every = f"every {self.interval:g} s" if self.running else "paused"
        self.title.value = (
            f"<h4 style='margin:0'>pipenb fleet at {url}</h4>"
            f"<small>updated {when} &middot; auto-refresh {every}</small>"
        )

    def _agents_table(self) -> str:
        if not self.agents:
            return "<i>no agents</i>"
        head = "".join(
            f"<th>{h}</th>" for h in ("id", "name", "labels", "state", "pipes", "last seen")
        )
        body = "".join(
            "<tr>"
            f"<td>{html.escape(a['id'])}</td><td>{html.escape(a.get('name') or '')}</td>"
            f"<td>{html.escape(', '.join(a.get('labels') or []))}</td>"
            f"<td>{_state(a.get('state', ''))}</td><td>{a.get('pipes', 0)}</td>"
            f"<td>{html.escape(str(a.get('last_seen') or '-'))}</td>"
            "</tr>"
            for a in self.agents
        )
        return f"{TABLE_STYLE}<table class='pipenb-dash'><tr>{head}</tr>{body}</table>"

    def _deployment_line(self, dep: dict[str, Any]) -> str:
        status = dep.get("status") or []
        running = sum(1 for s in status if s.get("state") == "running")
        rate = self.rates.get(dep["id"])
        rates = f"{rate[0]:,.1f} in/s, {rate[1]:,.1f} out/s" if rate else "no rates yet"
        errors = "; ".join(f"{s['agent_id']}: {s['error']}" for s in status if s.get("error"))
        note = no_match(dep)
        recent = self.errors.get(dep["id"]) or []
        extra = ""
        if note:
            extra += f" &middot; <i>{html.escape(note)}</i>"
        if recent:
            items = "".join(f"<li><code>{html.escape(e)}</code></li>" for e in recent)
            extra += f"<br><small>recent errors:</small><ul style='margin:0'>{items}</ul>"
        return (
            f"<b>{html.escape(dep['pipe'])}</b> v{dep.get('resolved_version')} "
            f"<code>{html.escape(dep['id'])}</code> {_state(dep.get('state', ''))} "
            f"&middot; {running}/{len(status)} instances running &middot; {rates}"
            + (
                f" &middot; <span style='color:#c62828'>{html.escape(errors)}</span>"
                if errors
                else ""
            )
            + extra
        )

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        lines = [f"pipenb fleet at {getattr(self.client, 'url', '')}"]
        if self.error:
            lines.append(f"  server error: {self.error}")
        for a in self.agents:
            lines.append(f"  agent {a['id']}: {a.get('state')} ({a.get('pipes', 0)} pipes)")
        for d in self.deployments:
            rate = self.rates.get(d["id"])
            per_s = f", {rate[0]:.1f} in/s" if rate else ""
            lines.append(f"  deployment {d['id']} of {d['pipe']}: {d.get('state')}{per_s}")
            for s in d.get("status") or []:
                if s.get("state") in ("refused", "failed"):  # never silent
                    lines.append(f"    {s['agent_id']}: {s['state']}: {s.get('error')}")
        return "\n".join(lines)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data["text/plain"] = repr(self)
        return bundle

    def close(self) -> None:
        """Stop refreshing and close the widgets."""
        self.stop()
        for widgets in self._rows.values():
            for widget in widgets:
                widget.close()
        self._rows.clear()
        for child in self.widget.children:
            child.close()
        self.widget.close()
