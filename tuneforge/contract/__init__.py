"""The contract between the API and the workers: the job spec, the status vocabulary and the queue.

Both sides import this package, and it imports none of FastAPI, SQLAlchemy or torch, so a worker
can validate a stored spec and an API process can publish a job without loading the other's runtime
(tests/test_layers.py enforces it).
"""
