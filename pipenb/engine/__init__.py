"""The engine: inputs, compiled actions and outputs run in batches with checkpoints."""
