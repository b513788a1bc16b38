"""Console scripts: argument parsing and printing only. Nothing in ``scaling`` imports this package."""
