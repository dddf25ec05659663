"""The wheel carries the prebuilt JupyterLab extension: installed into a fresh virtualenv with no
Node.js on the PATH, ``jupyter labextension list`` shows pipenb enabled and OK from the venv's
share/jupyter, ``python -m jupyterlab.browser_check`` passes, and JupyterLab from that venv shows
the Fleet panel in a real browser.

The wheel is built as ``make dist`` builds it (``pip wheel --no-deps --no-build-isolation .``,
reusing the extension ``make build-lab`` built). The fresh venv reuses the test venv's packages
(JupyterLab and pipenb's dependencies) through a ``.pth`` line instead of downloading them, but
pipenb itself comes only from the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from support import REPO_ROOT
from support.browser import CHROMIUM
from support.waiting import wait_until

REPO = REPO_ROOT
BUILT = REPO / "pipenb" / "labextension" / "static" / "style.js"
ROOT_ARGS = ["--allow-root"] if os.geteuid() == 0 else []  # containers and CI run as root
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not BUILT.exists(), reason="the JupyterLab extension is not built: make build-lab"
    ),
]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("pipenb*.whl")  # pipenb or pipenb_fleet
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the test venv's packages (JupyterLab, tornado, ...), after the fresh venv's own
    (Path(purelib) / "zz_reuse_test_venv.pth").write_text(
        "\n".join(p for p in site.getsitepackages() if "site-packages" in p) + "\n"
    )
    path = str(env_dir / "bin")
    assert shutil.which("node", path=path) is None
    home = tmp / "home"
    home.mkdir()
    env = {
        "PATH": path,
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        # JupyterLab's own application assets, where the test venv has them
        "JUPYTERLAB_DIR": str(Path(sys.prefix) / "share" / "jupyter" / "lab"),
        "LANG": "C.UTF-8",
    }
    return {"dir": env_dir, "py": py, "env": env, "tmp": tmp}


def test_pipenb_comes_from_the_wheel_not_the_checkout(venv: dict) -> None:
    out = subprocess.run(
        [str(venv["py"]), "-c", "import pipenb; print(pipenb.__file__)"],
        env=venv["env"],
        cwd=venv["tmp"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.startswith(str(venv["dir"])), out
    share = Path(venv["dir"]) / "share" / "jupyter" / "labextensions" / "pipenb"
    assert (share / "package.json").exists() and (share / "install.json").exists()
    assert (
        Path(venv["dir"]) / "etc" / "jupyter" / "jupyter_server_config.d" / "pipenb.json"
    ).exists()


def test_labextension_list_shows_pipenb_enabled_and_ok(venv: dict) -> None:
    r = subprocess.run(
        [str(venv["py"]), "-m", "jupyterlab.labextensions", "list"],
        env=venv["env"],
        cwd=venv["tmp"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = ANSI.sub("", r.stdout + r.stderr)
    assert r.returncode == 0, text
    section = text.split(str(Path(venv["dir"]) / "share" / "jupyter" / "labextensions"), 1)
    assert len(section) == 2, text  # listed from the venv's share/jupyter
    assert re.search(r"pipenb v0\.1\.0 enabled\s+OK", section[1]), text


def test_browser_check_passes(venv: dict) -> None:
    # --no-browser-test: jupyterlab's own browser step would download Playwright with npm; the
    # browser part is checked with Debian's chromium in the next test instead
    r = subprocess.run(
        [str(venv["py"]), "-m", "jupyterlab.browser_check", "--no-browser-test", *ROOT_ARGS],
        env=venv["env"],
        cwd=venv["tmp"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-4000:]
    assert "pipenb" in text  # the server extension loaded
    assert "Exiting normally" in text


@pytest.mark.skipif(
    not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)), reason=f"no chromium at {CHROMIUM}"
)
def test_jupyterlab_from_the_wheel_shows_the_fleet_panel(venv: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    from support.processes import free_port

    port, token = free_port(), "wheeltoken"
    with open(Path(venv["tmp"]) / "lab.log", "wb") as log:
        proc = subprocess.Popen(
            [
                str(venv["py"]),
                "-m",
                "jupyterlab",
                "--no-browser",
                *ROOT_ARGS,
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={venv['tmp']}",
            ],
            env=venv["env"],
            cwd=venv["tmp"],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:

        def answers() -> bool:
            assert proc.poll() is None, (Path(venv["tmp"]) / "lab.log").read_text()[-3000:]
            try:
                url = f"http://127.0.0.1:{port}/pipenb/api/v1/health"
                return requests.get(url, timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(answers, 90, "JupyterLab from the wheel to answer", interval=0.2)
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on(
                    "console",
                    lambda m: (
                        errors.append(m.text) if m.type == "error" and "pipenb" in m.text else None
                    ),
                )
                page.goto(f"http://127.0.0.1:{port}/lab?reset&token={token}")
                tab = page.locator(".jp-SideBar .lm-TabBar-tab[data-id='pipenb-fleet']")
                expect(tab).to_be_visible(timeout=90_000)
                tab.click()
                expect(page.locator(".jp-pipenb-fleet")).to_contain_text("No deployments yet")
                expect(page.locator(".jp-LauncherCard", has_text="New Pipe")).to_be_visible()
            finally:
                browser.close()
        assert not errors, errors
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
