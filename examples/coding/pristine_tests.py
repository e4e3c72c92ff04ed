"""Runs the environment's own copy of the tests inside the sandbox; sent by env.py, never
stored there.

Run as ``python3 -I -S -c <this file>`` in the repository, with the
pristine test module's source on stdin. ``-I`` keeps the working directory, user site and
``PYTHON*`` variables off the path, ``-S`` skips ``site`` (no ``.pth`` or ``sitecustomize``
the agent could plant), and the repository joins the path only after the standard library
is imported and only behind it: a planted ``unittest.py`` cannot shadow the real one. The
last line of stdout is the verdict as JSON; the test output goes to stderr.
"""

import json
import os
import sys
import types
import unittest

source = sys.stdin.read()
sys.path.append(os.getcwd())  # the code under test, last: it shadows nothing
module = types.ModuleType("test_wordstats")
exec(compile(source, "tests/test_wordstats.py", "exec"), module.__dict__)
suite = unittest.defaultTestLoader.loadTestsFromModule(module)
result = unittest.TextTestRunner(verbosity=0).run(suite)
failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
print(json.dumps({"ran": result.testsRun, "failed": failed}))
