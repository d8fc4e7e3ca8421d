"""Layer 6, orchestration: the job runner, recipes, studies, the Launch page's choices and executors (local, ray)."""
