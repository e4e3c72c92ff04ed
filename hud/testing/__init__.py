"""Conformance kits: what every capability and every harness must do, checked.

In the manner of anyio's ``check_one_way_stream``: a plug-in's own test suite calls the kit
with its implementation, and the kit raises :class:`ConformanceError` (an
``AssertionError``) naming the first rule broken. The built-in capabilities and harnesses
pass it in hud's own suite (``tests/test_conformance.py``).

>>> await check_capability(CapabilityProbe(
...     name="shell", declare=lambda env: env.use("workspace", root),
...     exercise=lambda shell: shell.run("true", check=True)))
>>> await check_harness("oracle")
"""

from .capability import CapabilityProbe, ConformanceError, check_capability
from .harness import check_harness

__all__ = ["CapabilityProbe", "ConformanceError", "check_capability", "check_harness"]
