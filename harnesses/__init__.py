"""Built-in harness plug-ins, installed as ``hud.harnesses``."""
