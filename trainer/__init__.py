"""The inner loop: tasks, harness, baseline train scripts, patches, sandboxed runner. Imports nothing else of ours."""
