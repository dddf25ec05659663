"""The JupyterLab extension in a real browser (Debian's chromium through Playwright) against
JupyterLab started as ``make run`` starts it, with its agent ``local``:

open a pipe file in the Pipe Editor, type a mistake and see the diagnostic at its line, fix it,
preview a loghub sample and see the per-stage tables, run the tests; then a new pipe from the
launcher, deployed through the Deploy dialog to the local agent, running in the Fleet panel with
a rate, tapped for live events, and stopped. Screenshots go to tests/artifacts/.

The extension must be built (``make build-lab``, which ``make test`` runs first); without it, or
without chromium, the test is skipped, saying why.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from support import ARTIFACTS, REPO_ROOT
from support.browser import launch, needs_chromium
from support.labproc import LabProcess

REPO = REPO_ROOT
BUILT = REPO / "pipenb" / "labextension" / "package.json"
SAMPLE = (
    "examples/data/Apache_2k.log"  # loghub's Apache 2k sample, as tests/e2e/test_loghub.py reads it
)

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(
        not BUILT.exists(), reason="the JupyterLab extension is not built: make build-lab"
    ),
    pytest.mark.slow,
    pytest.mark.timeout(600),
]


def editor_line(page, text: str):  # type: ignore[no-untyped-def]
    return page.locator(".jp-pipenb-editor:visible .cm-line", has_text=text).first


def line_number(page, line) -> int:  # type: ignore[no-untyped-def]
    """The 1-based number of a rendered CodeMirror line (the document is short: all rendered)."""
    return int(
        line.evaluate(
            "(el) => Array.from(el.parentElement.querySelectorAll(':scope > .cm-line')).indexOf(el) + 1"
        )
    )


# Each flow has a JupyterLab workspace of its own, so the tabs it leaves open are not restored
# in the default workspace other tests (test_browser.py) open.


def run_editor_flow(url: str, token: str, workdir: str) -> None:
    """Pipe Editor: diagnostics, fix, preview of a loghub sample, tests."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.set_default_timeout(60_000)
            page.goto(
                f"{url}/lab/workspaces/pipenb-editor/tree/{workdir}/apache.pipe.yaml?reset&token={token}"
            )
            editor = page.locator(".jp-pipenb-editor:visible")
            expect(editor).to_be_visible(timeout=90_000)
            problems = editor.locator(".jp-pipenb-problems")
            expect(problems).to_contain_text("No problems", timeout=60_000)

            # a mistake: "filter" becomes "fliter"; the problem appears at that line
            line = editor_line(page, "- filter:")
            expected_line = line_number(page, line)
            line.locator("text=filter").first.dblclick()
            page.keyboard.type("fliter")
            expect(editor).to_have_attribute("data-checking", "false")
            item = problems.locator(".jp-pipenb-problem").first
            expect(item).to_contain_text("did you mean 'filter'")
            expect(item.locator(".jp-pipenb-where")).to_have_text(
                re.compile(rf"^{expected_line}:\d+$")
            )
            marked = editor.locator(".cm-line:has(.cm-lintRange-error)")
            expect(marked).to_have_count(1)
            expect(marked).to_contain_text("fliter")
            assert line_number(page, marked.first) == expected_line
            page.screenshot(path=str(ARTIFACTS / "lab-editor-problem.png"))

            # fixed: the problem goes away
            editor_line(page, "- fliter:").locator("text=fliter").first.dblclick()
            page.keyboard.type("filter")
            expect(editor).to_have_attribute("data-checking", "false")
            expect(problems).to_contain_text("No problems")
            expect(marked).to_have_count(0)

            # preview of the loghub sample: every stage's counts and its events as a table
            editor.locator(".jp-pipenb-side .lm-TabBar-tab", has_text="Preview").click()
            preview = editor.locator(".jp-pipenb-preview")
            preview.locator(".jp-pipenb-sample-source").select_option("file")
            preview.locator(".jp-pipenb-sample-path").fill(SAMPLE)
            preview.locator(".jp-pipenb-run-preview").click()
            counts = preview.locator(".jp-pipenb-counts")
            expect(counts).to_be_visible()
            expect(counts.locator("tbody tr")).to_have_count(6)  # input + 5 actions
            expect(counts.locator("tbody tr").first).to_contain_text("input:files")
            expect(counts.locator("tbody tr").first.locator("td").nth(2)).to_have_text("200")
            tabs = preview.locator(".jp-pipenb-stage-tab")
            expect(tabs).to_have_count(7)  # every stage and the dead letters
            preview.locator(".jp-pipenb-stage-tab[data-stage='0:extract']").click()
            table = preview.locator(".jp-pipenb-events")
            expect(table.locator("th", has_text="level")).to_have_count(1)
            expect(table.locator("tbody tr").first).to_contain_text("Sun Dec 04")
            preview.locator(".jp-pipenb-stage-tab[data-stage='4:add']").click()
            expect(table.locator("th", has_text="timestamp")).to_have_count(1)
            expect(table.locator("tbody tr")).to_have_count(200)
            page.screenshot(path=str(ARTIFACTS / "lab-editor-preview.png"))
            # with a parameter: level=error keeps the error lines only
            preview.locator(".jp-pipenb-preview-params").fill("level=error")
            runs = int(preview.get_attribute("data-runs") or 0)
            preview.locator(".jp-pipenb-run-preview").click()
            expect(preview).to_have_attribute("data-runs", str(runs + 1))
            expect(table.locator("tbody tr", has_text="notice")).to_have_count(0)
            expect(table.locator("tbody tr", has_text="error").first).to_be_visible()

            # the pipe's tests: every case passes
            page.locator(".jp-pipenb-tb-tests:visible").click()
            tests = editor.locator(".jp-pipenb-tests")
            expect(tests).to_contain_text("4/4 passed")
            expect(tests.locator(".jp-pipenb-case.jp-mod-pass")).to_have_count(4)
            page.screenshot(path=str(ARTIFACTS / "lab-editor-tests.png"))

            # Save to server with a message, then Diff against the stored version
            page.locator(".jp-pipenb-tb-save:visible").click()
            ask = page.locator(".jp-Dialog")
            ask.locator("input").fill("first version from the UI test")
            ask.get_by_role("button", name="OK").click()
            expect(page.locator(".Toastify__toast", has_text="apache")).to_contain_text(
                re.compile(r"Saved apache as version \d+|apache v\d+ is already this text")
            )
            editor_line(page, "labels: [web]").click()
            page.keyboard.press("End")
            page.keyboard.press("ArrowLeft")
            page.keyboard.type(", eu")
            expect(editor).to_have_attribute("data-checking", "false")
            expect(problems).to_contain_text("No problems")
            page.locator(".jp-pipenb-tb-diff:visible").click()
            diff = page.locator(".jp-Dialog .jp-pipenb-diff")
            expect(diff).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "lab-editor-diff.png"))
            expect(diff.locator(".jp-mod-del")).to_have_text(["-labels: [web]"])
            expect(diff.locator(".jp-mod-add")).to_have_text(["+labels: [web, eu]"])
            page.locator(".jp-Dialog").get_by_role("button", name="OK").click()

            # completion of an action name from the server's schema
            editor_line(page, "- add: {source: apache}").click()
            page.keyboard.press("End")
            page.keyboard.press("Enter")
            page.keyboard.type("- dedu")
            menu = page.locator(".cm-tooltip-autocomplete")
            expect(menu).to_contain_text("dedupe")
            page.keyboard.press("Escape")
        finally:
            browser.close()


def run_notebook_flow(url: str, token: str, workdir: str) -> None:
    """ "Open With → Pipe Editor" for a plain YAML file; a %%pipe cell is highlighted as YAML."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/lab/workspaces/pipenb-notebook/tree/{workdir}?reset&token={token}")
            item = page.locator(".jp-DirListing-item", has_text="plain.yaml")
            expect(item).to_be_visible(timeout=90_000)
            item.click(button="right")
            page.locator(".lm-Menu-item", has_text="Open With").hover()
            page.locator(".lm-Menu-item", has_text="Pipe Editor").click()
            expect(page.locator(".jp-pipenb-editor:visible .jp-pipenb-problems")).to_contain_text(
                "No problems"
            )

            page.goto(
                f"{url}/lab/workspaces/pipenb-notebook/tree/{workdir}/cells.ipynb?token={token}"
            )
            chooser = page.locator(".jp-Dialog", has_text="Select Kernel")
            page.add_locator_handler(
                chooser, lambda dialog: dialog.get_by_role("button", name="Select").click()
            )
            cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
            expect(cells).to_have_count(2, timeout=90_000)
            expect(cells.nth(0)).to_have_class(re.compile(r"\bjp-pipenb-pipe-cell\b"))
            expect(cells.nth(1)).not_to_have_class(re.compile(r"\bjp-pipenb-pipe-cell\b"))
            # typing the magic into the Python cell turns it into a pipe cell
            cells.nth(1).locator(".cm-content").click()
            page.keyboard.press("Control+Home")
            page.keyboard.type("%%pipe\n")
            expect(cells.nth(1)).to_have_class(re.compile(r"\bjp-pipenb-pipe-cell\b"))
        finally:
            browser.close()


def run_fleet_flow(url: str, token: str, workdir: str) -> str:
    """New Pipe from the launcher, Deploy dialog, Fleet panel with a rate, tap, stop.
    Returns the deployment id."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/lab/workspaces/pipenb-fleet/tree/{workdir}?reset&token={token}")
            expect(page.locator(".jp-DirListing-item", has_text="apache.pipe.yaml")).to_be_visible(
                timeout=90_000
            )
            page.get_by_role("button", name="New Launcher").first.click()
            card = page.locator(".jp-Launcher:visible .jp-LauncherCard", has_text="New Pipe")
            expect(card).to_be_visible()
            card.click()
            editor = page.locator(".jp-pipenb-editor:visible")
            expect(editor).to_be_visible()
            expect(editor.locator(".jp-pipenb-problems")).to_contain_text("No problems")
            page.locator(".jp-pipenb-tb-deploy:visible").click()

            dialog = page.locator(".jp-Dialog")
            expect(dialog.locator(".jp-pipenb-matches")).to_contain_text("local (online)")
            dialog.locator(".jp-pipenb-labels").fill("no-such-label")
            expect(dialog.locator(".jp-pipenb-matches")).to_contain_text("Matching agents (0)")
            dialog.locator(".jp-pipenb-labels").fill("local")
            expect(dialog.locator(".jp-pipenb-agent-chip")).to_have_count(1)
            level = dialog.locator("select.jp-pipenb-param[name='level']")
            expect(level.locator("option")).to_have_count(3)
            level.select_option("info")
            page.screenshot(path=str(ARTIFACTS / "lab-deploy-dialog.png"))
            dialog.get_by_role("button", name="Deploy").click()

            state = editor.locator(".jp-pipenb-dep-state")
            expect(state).to_be_visible()
            dep_id = state.inner_text().split(":")[0].strip()

            # a notebook to copy the tap into later
            page.locator(".jp-DirListing-item", has_text="cells.ipynb").dblclick()
            chooser = page.locator(".jp-Dialog", has_text="Select Kernel")
            page.add_locator_handler(
                chooser, lambda dialog: dialog.get_by_role("button", name="Select").click()
            )
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            expect(notebook.locator(".jp-CodeCell")).to_have_count(2, timeout=90_000)

            # the Fleet panel: the deployment runs, with events per second
            page.locator(".jp-SideBar .lm-TabBar-tab[data-id='pipenb-fleet']").click()
            dep = page.locator(f".jp-pipenb-dep[data-id='{dep_id}']")
            expect(dep).to_have_attribute("data-state", "running", timeout=90_000)
            expect(dep.locator(".jp-pipenb-rate")).to_have_text(
                re.compile(r"in [0-9.]+/s"), timeout=90_000
            )
            rate = float(
                re.search(r"in ([0-9.]+)/s", dep.locator(".jp-pipenb-rate").inner_text()).group(1)
            )
            assert rate > 0
            expect(page.locator(".jp-pipenb-agent[data-name='local']")).to_contain_text("online")
            page.screenshot(path=str(ARTIFACTS / "lab-fleet.png"))

            # tap: live events of the output stage
            dep.locator("button[data-action='tap']").click()
            tap = page.locator(".jp-pipenb-tap")
            rows = tap.locator(".jp-pipenb-events tbody tr")
            expect(rows.first).to_be_visible(timeout=90_000)
            expect(rows.first).to_contain_text("info")  # level=info was deployed
            expect(rows.first).to_contain_text("started")
            # another stage: after the extract, before the filter, the error lines pass too
            stage = tap.locator("select.jp-pipenb-tap-stage")
            expect(stage.locator("option")).to_have_count(4)  # output, input, 0:extract, 1:filter
            stage.select_option("0:extract")
            expect(rows.filter(has_text="disk full").first).to_be_visible(timeout=90_000)
            tap.locator(".jp-pipenb-tap-pause").click()
            expect(tap).to_have_attribute("data-paused", "true")
            tap.locator(".jp-pipenb-tap-copy").click()
            magic = f"%pipe tap {dep_id} --stage 0:extract --limit 10"
            expect(notebook.locator(".jp-CodeCell")).to_have_count(3)
            expect(notebook.locator(".jp-CodeCell", has_text=magic)).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "lab-tap.png"))

            # stop it from the panel
            dep.locator("button[data-action='stop']").click()
            expect(dep).to_have_attribute("data-state", "stopped", timeout=60_000)
            expect(dep.locator("button[data-action='start']")).to_be_visible()
            return dep_id
        finally:
            browser.close()


@pytest.fixture
def workdir(lab: LabProcess) -> str:
    """A directory under JupyterLab's root (the repository) that git ignores, with a pipe file."""
    rel = f"tests/artifacts/lab-ui-{lab.port}"
    d = REPO / rel
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "apache.yml", d / "apache.pipe.yaml")
    shutil.copy(REPO / "examples" / "demo.yml", d / "plain.yaml")
    cells = [
        "%%pipe\nname: cell-pipe\ninput: {echo: {lines: [a]}}\noutput: {discard: {}}",
        "print('python')",
    ]
    (d / "cells.ipynb").write_text(json.dumps(notebook(cells)))
    return rel


def notebook(sources: list[str]) -> dict:
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(sources)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_pipe_editor_diagnostics_preview_and_tests(lab: LabProcess, workdir: str) -> None:
    run_editor_flow(lab.url, lab.token, workdir)
    assert (ARTIFACTS / "lab-editor-preview.png").stat().st_size > 10_000


def test_settings_come_from_the_schema(lab: LabProcess) -> None:
    import requests

    r = requests.get(
        f"{lab.url}/lab/api/settings/pipenb:plugin",
        headers={"Authorization": f"token {lab.token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    props = r.json()["schema"]["properties"]
    assert props["refreshInterval"]["default"] == 5
    assert props["sampleSize"]["default"] == 200


def test_open_with_pipe_editor_and_pipe_cells_highlighted_as_yaml(
    lab: LabProcess, workdir: str
) -> None:
    run_notebook_flow(lab.url, lab.token, workdir)


def test_deploy_from_the_editor_then_fleet_panel_tap_and_stop(
    lab: LabProcess, workdir: str
) -> None:
    dep_id = run_fleet_flow(lab.url, lab.token, workdir)
    dep = lab.get(f"/deployments/{dep_id}").json()
    assert dep["running"] is False  # the panel's stop reached the server
    assert dep["params"] == {"level": "info"}
    assert dep["labels"] == ["local"]


def test_pipe_editor_previews_on_the_local_agent(lab: LabProcess, workdir: str) -> None:
    """'Preview on agent…': the pipe reads a file on the agent (the local agent of scripts/run.sh
    allows previews and reads /tmp/**); the Preview tab shows its stages like a local run."""
    from playwright.sync_api import expect, sync_playwright

    log = Path("/tmp") / f"pipenb-ui-preview-{lab.port}.log"
    log.write_text("".join(f"level={'error' if i % 2 else 'info'} n={i}\n" for i in range(40)))
    (REPO / workdir / "onagent.pipe.yaml").write_text(
        "name: onagent\n"
        f'input:\n  files: {{path: "{log}"}}\n'
        'actions:\n  - parse: {format: logfmt}\n  - filter: level == "error"\n'
        "output:\n  discard: {}\n"
    )
    agent = lab.local_agent()
    assert agent is not None
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 950})
                page.set_default_timeout(60_000)
                page.goto(
                    f"{lab.url}/lab/workspaces/pipenb-agent/tree/{workdir}/onagent.pipe.yaml"
                    f"?reset&token={lab.token}"
                )
                editor = page.locator(".jp-pipenb-editor:visible")
                expect(editor).to_be_visible(timeout=90_000)
                editor.locator(".jp-pipenb-side .lm-TabBar-tab", has_text="Preview").click()
                preview = editor.locator(".jp-pipenb-preview")
                preview.locator(".jp-pipenb-sample-source").select_option("agent")
                preview.locator(".jp-pipenb-sample-agent").fill(agent["id"])
                preview.locator(".jp-pipenb-run-preview").click()
                counts = preview.locator(".jp-pipenb-counts")
                expect(counts).to_be_visible()
                rows = counts.locator("tbody tr")
                expect(rows).to_have_count(3)  # the input and two actions
                expect(rows.first).to_contain_text("input:files")
                expect(rows.first.locator("td").nth(2)).to_have_text("40")
                expect(rows.last.locator("td").nth(2)).to_have_text("20")  # the error lines
                page.screenshot(path=str(ARTIFACTS / "lab-editor-preview-on-agent.png"))
                # an agent that does not exist: the server's message, not a crash
                preview.locator(".jp-pipenb-sample-agent").fill("no-such-agent")
                preview.locator(".jp-pipenb-run-preview").click()
                expect(preview.locator(".jp-pipenb-error")).to_contain_text("no-such-agent")
            finally:
                browser.close()
    finally:
        log.unlink(missing_ok=True)


def test_pipe_editor_shows_each_outputs_events(lab: LabProcess, workdir: str) -> None:
    """A pipe with ``outputs:``: the Preview tab says what each output received (and what none
    took), with a tab per output holding its events."""
    from playwright.sync_api import expect, sync_playwright

    (REPO / workdir / "routed.pipe.yaml").write_text(
        "name: routed\n"
        "input: {echo: {lines: ['level=error n=1', 'level=info n=2', 'level=error n=3',"
        " 'level=debug n=4']}}\n"
        "actions:\n  - parse: {format: logfmt}\n"
        "outputs:\n"
        "  errors: {when: 'level == \"error\"', discard: {}, actions: [{add: {team: ops}}]}\n"
        "  infos: {when: 'level == \"info\"', discard: {}}\n"
    )
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.set_default_timeout(60_000)
            page.goto(
                f"{lab.url}/lab/workspaces/pipenb-routes/tree/{workdir}/routed.pipe.yaml"
                f"?reset&token={lab.token}"
            )
            editor = page.locator(".jp-pipenb-editor:visible")
            expect(editor).to_be_visible(timeout=90_000)
            editor.locator(".jp-pipenb-side .lm-TabBar-tab", has_text="Preview").click()
            preview = editor.locator(".jp-pipenb-preview")
            preview.locator(".jp-pipenb-run-preview").click()
            expect(preview.locator(".jp-pipenb-routes")).to_have_text(
                "outputs: errors 2, infos 1; unrouted 1"
            )
            preview.locator(".jp-pipenb-stage-tab[data-output='errors']").click()
            pane = preview.locator(".jp-pipenb-stage-pane")
            expect(pane).to_contain_text("2 event(s)")
            expect(pane).to_contain_text("ops")  # the output's own action ran on its copy
            page.screenshot(path=str(ARTIFACTS / "lab-editor-routes.png"))
        finally:
            browser.close()
