"""Wall-clock bounds in tests: what the code itself allows, plus one stated slack.

A test that asserts "this ended within N seconds" builds N from the code's own constants (a timeout,
a kill grace, a poll interval) plus one of these slacks, never from a bare number: on a loaded
machine a bare number measures the machine. Where no bound is needed, wait on the event instead.
"""

SLACK_S = 5.0  # in-process work (an event loop, threads, SQLite) scheduled late on a busy 2-core CI box
PROCESS_SLACK_S = 15.0  # the same, plus starting and ending processes: bwrap, a Python start-up and its
# imports (torch in a harness), a cgroup, the kernel tearing a killed run down
