"""The harness: the read-only side of the trust boundary (docs/design.md, "The trust boundary").

These modules run inside the sandboxed child processes next to a stranger's train script: the
token-budget loader, the loss-curve recorder, evaluation, FLOP counting, device set-up, and the
child entry point. They import only torch and the standard library.
"""
