"""The coding dataset: the repository fix, and a few tool-only counting tasks."""

from env import count_with_tools, fix_failing_test

tasks = [
    fix_failing_test(),
    *(count_with_tools(word=w, letter=c) for w, c in [("strawberry", "r"), ("banana", "a")]),
]
