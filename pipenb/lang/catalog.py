"""Where each built-in component lives. Modules are imported when a pipe first uses them, so a
pipe of three components does not pay for building the option models of thirty.

The engine's modules are named here as strings: the language package knows where components
are registered without importing the engine (``pipenb.lang.registry`` imports them on demand)."""

BUILTINS: dict[tuple[str, str], str] = {
    ("input", "dataset"): "pipenb.engine.inputs.dataset",
    ("input", "echo"): "pipenb.engine.inputs.echo",
    ("input", "exec"): "pipenb.engine.inputs.exec",
    ("input", "files"): "pipenb.engine.inputs.files",
    ("input", "stdin"): "pipenb.engine.inputs.stdin",
    ("input", "http-poll"): "pipenb.engine.inputs.http_poll",
    ("input", "http-server"): "pipenb.engine.inputs.http_server",
    ("input", "tcp"): "pipenb.engine.inputs.sockets",
    ("input", "udp"): "pipenb.engine.inputs.sockets",
    ("action", "filter"): "pipenb.engine.actions.filter",
    ("action", "drop"): "pipenb.engine.actions.filter",
    ("action", "add"): "pipenb.engine.actions.fields",
    ("action", "set"): "pipenb.engine.actions.fields",
    ("action", "remove"): "pipenb.engine.actions.fields",
    ("action", "keep"): "pipenb.engine.actions.fields",
    ("action", "rename"): "pipenb.engine.actions.fields",
    ("action", "extract"): "pipenb.engine.actions.extract",
    ("action", "parse"): "pipenb.engine.actions.parse",
    ("action", "grok"): "pipenb.engine.actions.grok",
    ("action", "lookup"): "pipenb.engine.actions.lookup",
    ("action", "convert"): "pipenb.engine.actions.convert",
    ("action", "time"): "pipenb.engine.actions.timestamp",
    ("action", "mask"): "pipenb.engine.actions.mask",
    ("action", "sample"): "pipenb.engine.actions.sample",
    ("action", "dedupe"): "pipenb.engine.actions.dedupe",
    ("action", "aggregate"): "pipenb.engine.actions.aggregate",
    ("action", "unnest"): "pipenb.engine.actions.unnest",
    ("action", "script"): "pipenb.engine.actions.script",
    ("output", "print"): "pipenb.engine.outputs.print",
    ("output", "file"): "pipenb.engine.outputs.file",
    ("output", "discard"): "pipenb.engine.outputs.discard",
    ("output", "http-post"): "pipenb.engine.outputs.http_post",
    ("output", "tcp"): "pipenb.engine.outputs.sockets",
    ("output", "udp"): "pipenb.engine.outputs.sockets",
    ("output", "syslog"): "pipenb.engine.outputs.syslog",
}
