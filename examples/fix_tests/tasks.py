"""The fix-tests taskset: one task."""

from env import fix_tests

tasks = [fix_tests()]
