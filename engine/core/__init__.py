"""Layer 1, the core: config and options, registries, errors, progress, the run context and the typed Point. Imports no torch."""
