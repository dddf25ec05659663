/** The text of a new pipe file (the launcher's "New Pipe"): small, valid, with a test. */
export const PIPE_TEMPLATE = `# A pipe: one input, actions in order, one output. Preview it, run its tests, deploy it.
name: my-pipe
description: What this pipe does
labels: [local]
params:
  level: {default: error, enum: [error, warn, info]}
input:
  echo:
    lines:
      - 2024-05-01T10:00:00Z error disk full
      - 2024-05-01T10:00:01Z info started
    interval: 1s
actions:
  - extract: {field: _raw, pattern: '^(?P<time>\\S+) (?P<level>\\w+) (?P<message>.*)$'}
  - filter: level == "{{level}}"
output:
  print: {}
tests:
  - name: keeps the chosen level
    input: ["2024-05-01T10:00:00Z error disk full", "2024-05-01T10:00:01Z info started"]
    expect: [{level: error, message: disk full}]
`;
