"""Installing an agent: the server's own wheel, the bootstrap script, and what the line needs.

The wheel and the script are public code with no secret in them, so they are served without
credentials (a worker host has none yet). What the install line is built from (the wheel's
SHA-256, the server's key pin) is asked for with the user token, over the connection the user
already trusts, so a tampered download is caught by the script.
"""

from __future__ import annotations

from typing import Any

from pipenb import __version__
from pipenb.errors import ApiError
from pipenb.server import models as M
from pipenb.server.handlers.base import ApiHandler, api
from pipenb.server.install import NO_WHEEL, Wheel, load_wheel, public_key_pin, render_script


class _InstallHandler(ApiHandler):
    def wheel(self, required: bool = True) -> Wheel | None:
        path = self.cp.settings.wheel
        if path is None:
            if required:
                raise ApiError(404, "no_wheel", NO_WHEEL)
            return None
        try:
            return load_wheel(path)
        except OSError as exc:  # removed or unreadable since the server started
            raise ApiError(404, "no_wheel", f"{NO_WHEEL} ({path}: {exc.strerror})") from None

    def tls_pin(self) -> str | None:
        """The pin of the server's own certificate, when it serves TLS (``tls_cert``)."""
        cert = getattr(self.cp.settings, "tls_cert", None)
        if not cert:
            return None
        with open(cert, "rb") as f:
            return public_key_pin(f.read())


class InstallScriptHandler(_InstallHandler):
    @api("The agent install script (holds no secret; run it with the line from install-command)",
         auth="none", offload=False)  # fmt: skip
    def get(self) -> None:
        script = render_script(self.wheel())
        self.set_header("Content-Type", "text/x-shellscript; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(script)


class WheelHandler(_InstallHandler):
    @api("This server's pipenb wheel, for the agent install script", auth="none", offload=False)
    def get(self) -> None:
        wheel = self.wheel()
        assert wheel is not None
        try:
            data = wheel.path.read_bytes()
        except OSError as exc:
            raise ApiError(404, "no_wheel", f"{NO_WHEEL} ({exc.strerror})") from None
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{wheel.filename}"')
        self.set_header("Cache-Control", "no-store")
        self.finish(data)


class InstallInfoHandler(_InstallHandler):
    @api(
        "What an agent install line needs: the served wheel's SHA-256 and the server's key pin",
        response=M.AgentInstallInfo,
        offload=False,
    )
    def get(self) -> None:
        wheel = self.wheel(required=False)
        info: dict[str, Any] = {"version": __version__, "wheel": None, "tls_pin": self.tls_pin()}
        if wheel is not None:
            info["wheel"] = M.AgentWheel(
                filename=wheel.filename, sha256=wheel.sha256, size=wheel.size, version=wheel.version
            )
        self.send(M.AgentInstallInfo(**info))
