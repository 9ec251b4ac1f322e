"""The inference engine: loaded models kept in a small LRU cache, and token-by-token generation.
Like tuneforge/worker/training/, it imports nothing from `app/`; tuneforge/worker/serving.py is the glue."""
