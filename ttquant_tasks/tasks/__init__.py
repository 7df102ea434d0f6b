"""Celery side: the app, thin tasks, parking and fail-fast publishing."""
