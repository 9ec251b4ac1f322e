"""The inference engine: loaded models kept in a small LRU cache, and token-by-token generation.
Like worker/training/, it imports nothing from `app/`; worker/serving.py is the glue."""
