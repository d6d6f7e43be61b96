"""model-fleet workers: Celery tasks over a core that resolves, loads and checks models."""
