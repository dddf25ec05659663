"""Inputs: each module registers one input; all yield ``Batch``es and may resume a checkpoint."""
