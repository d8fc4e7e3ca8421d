"""Layer 4, methods: the task registry, tasks that start from a checkpoint, and the families quant/, prune/, distill/ (one file per method), plus train, measure and what-if."""
