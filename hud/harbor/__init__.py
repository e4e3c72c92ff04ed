"""Harbor tasks: read a Harbor dataset as an environment (``hud eval DIR AGENT``), and
write hud tasks as Harbor task directories (``hud export-tasks --format harbor``)."""

from .environment import harbor_environment
from .task import HarborTask, is_harbor_source, read_dataset

__all__ = ["HarborTask", "harbor_environment", "is_harbor_source", "read_dataset"]
