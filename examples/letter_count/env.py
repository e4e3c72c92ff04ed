"""Letter counting: the smallest useful environment. No capabilities, just prompt and grade."""

from hud import Environment

env = Environment("letter-count", version="1.0.0")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    """Count how often a letter occurs in a word."""
    answer = yield f"How many times does {letter!r} occur in {word!r}? Reply with just the number."
    yield 1.0 if str(answer).strip() == str(word.count(letter)) else 0.0


@count_letter.solution
def solve(word: str, letter: str) -> str:
    """The reference solution, used by the `oracle` harness and `hud check`."""
    return str(word.count(letter))
