"""Tuneforge: a self-hosted QLoRA fine-tuning service in the shape of OpenAI's fine-tuning API.

Everything ships under this one top-level package (`tuneforge.app`, the API; `tuneforge.worker`, the
training and inference workers; `tuneforge.contract`, what both sides share; `tuneforge.storage`, the
artifact store), so installing Tuneforge never overwrites another distribution's `app` or `worker`.
"""
