"""Built-in capability plug-ins (ssh, mcp, cdp, rfb, robot), installed as ``hud.capabilities``."""
