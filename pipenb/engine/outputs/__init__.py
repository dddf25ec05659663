"""Outputs: each module registers one output; ``write`` returns once a batch is handed over."""
