"""Checkpoint permissions: an organization shares a fine-tuned model or checkpoint with another."""
