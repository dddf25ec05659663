"""Where each built-in component lives. Modules are imported when a pipe first uses them, so a
pipe of three components does not pay for building the option models of thirty."""

BUILTINS: dict[tuple[str, str], str] = {
    ("input", "echo"): "pipenb.engine.inputs.echo",
    ("input", "exec"): "pipenb.engine.inputs.exec",
    ("input", "files"): "pipenb.engine.inputs.files",
    ("input", "stdin"): "pipenb.engine.inputs.stdin",
    ("action", "filter"): "pipenb.engine.actions.filter",
    ("action", "drop"): "pipenb.engine.actions.filter",
    ("action", "add"): "pipenb.engine.actions.fields",
    ("action", "set"): "pipenb.engine.actions.fields",
    ("action", "remove"): "pipenb.engine.actions.fields",
    ("action", "keep"): "pipenb.engine.actions.fields",
    ("action", "rename"): "pipenb.engine.actions.fields",
    ("action", "extract"): "pipenb.engine.actions.extract",
    ("action", "parse"): "pipenb.engine.actions.parse",
    ("action", "convert"): "pipenb.engine.actions.convert",
    ("action", "time"): "pipenb.engine.actions.timestamp",
    ("action", "mask"): "pipenb.engine.actions.mask",
    ("output", "print"): "pipenb.engine.outputs.print",
    ("output", "file"): "pipenb.engine.outputs.file",
    ("output", "discard"): "pipenb.engine.outputs.discard",
}
