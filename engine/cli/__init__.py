"""Layer 7, the command line: `python -m engine ...`, generated from the registries."""
