"""A real browser on JupyterLab as ``make run`` starts it: Debian's chromium, driven by
Playwright, opens the quickstart notebook, runs every cell in a kernel JupyterLab started, and
sees the preview table and the fleet table rendered. A screenshot goes to tests/artifacts/.

``make test`` installs chromium (scripts/chromium-test.sh) where it can; elsewhere this test is
skipped, saying why.
"""

from __future__ import annotations

from support import ARTIFACTS
from support.browser import launch, needs_chromium
from support.labproc import LabProcess

pytestmark = needs_chromium


def test_quickstart_runs_in_jupyterlab_and_shows_the_preview(lab: LabProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{lab.url}/lab/tree/notebooks/quickstart.ipynb?token={lab.token}")
            # Under load JupyterLab may open the notebook before it has listed the kernels and
            # then ask which one to start: answer with its preselected choice (Python 3).
            chooser = page.locator(".jp-Dialog", has_text="Select Kernel")
            page.add_locator_handler(
                chooser, lambda dialog: dialog.get_by_role("button", name="Select").click()
            )
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            expect(notebook.locator(".jp-Cell").first).to_be_visible(timeout=90_000)
            # the kernel JupyterLab started for the notebook is up and idle
            expect(notebook.locator(".jp-KernelName")).to_contain_text("Python", timeout=90_000)
            idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            expect(idle).to_have_count(1, timeout=90_000)

            page.locator(".lm-MenuBar-item", has_text="Run").click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()

            # the preview of the fixed cell: its HTML table, rendered
            preview = notebook.locator(".jp-RenderedHTMLCommon", has_text="Preview of errors")
            expect(preview.first).to_be_visible(timeout=90_000)
            expect(preview.first.locator("table td", has_text="cannot reach db-1")).to_be_visible()
            # the invalid cell shows where its mistake is
            expect(notebook.locator(".jp-OutputArea-output", has_text="cell:9:19")).to_be_visible()
            # the last cell ran in the kernel JupyterLab started, connected with no setup
            fleet = notebook.locator(".jp-RenderedHTMLCommon table", has_text="local")
            expect(fleet.last).to_be_visible(timeout=90_000)
            expect(
                notebook.locator(".jp-OutputArea-output[data-mime-type*='error']")
            ).to_have_count(0)

            fleet.last.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "quickstart.png"), full_page=True)
            preview.first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "quickstart-preview.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "quickstart-preview.png").stat().st_size > 10_000
