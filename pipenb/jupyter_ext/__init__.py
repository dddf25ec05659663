"""The pipenb control plane as a jupyter-server extension (docs/jupyter.md)."""

from __future__ import annotations

from typing import Any

from pipenb.jupyter_ext.app import PipenbExtension

__all__ = ["PipenbExtension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "pipenb.jupyter_ext", "app": PipenbExtension}]
