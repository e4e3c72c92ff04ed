"""Fakes of the services we do not own and cannot run here: model providers' HTTP APIs.
Each speaks its provider's real wire format on 127.0.0.1 and is driven by the real SDK."""
