"""The client CLI: `tuneforge files|jobs|chat ...` against a running server (docs/cli.md).

It speaks the public HTTP API only, and validates with the server's own schemas (`JobCreate` before
sending, the response models on the way back) rather than a second copy of them.
"""
