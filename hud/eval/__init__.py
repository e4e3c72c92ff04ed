"""The eval engine: tasksets, rollouts, runtimes, jobs and traces."""

from .job import Job, group_relative
from .pool import PoolRuntime
from .rollout import rollout
from .run import Run
from .runtimes import InProcessRuntime, Runtime, SubprocessRuntime, UrlRuntime
from .taskset import Taskset
from .trace import Step, Trace

__all__ = [
    "InProcessRuntime",
    "Job",
    "PoolRuntime",
    "Run",
    "Runtime",
    "Step",
    "SubprocessRuntime",
    "Taskset",
    "Trace",
    "UrlRuntime",
    "group_relative",
    "rollout",
]
