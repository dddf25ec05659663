"""The pipe language: YAML with positions, the component registry, validation, templates and
the safe expression language."""

from pipenb.lang.registry import registry
from pipenb.lang.spec import ComponentSpec, ParamSpec, PipeSpec, PipeTestCase
from pipenb.lang.validate import load_pipe

__all__ = ["ComponentSpec", "ParamSpec", "PipeSpec", "PipeTestCase", "load_pipe", "registry"]
