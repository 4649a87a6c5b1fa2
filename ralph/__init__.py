"""The outer loop: proposers, memory, meta-parameters, keep/discard."""
