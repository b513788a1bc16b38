"""The run layer: one training process, from the resolved config to its run record."""
