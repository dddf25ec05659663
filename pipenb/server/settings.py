"""The server's settings: declared in ``pipenb.server_settings`` (see there why), named here too
so the server's modules find them in their own package."""

from pipenb.server_settings import ServerSettings, byte_size

__all__ = ["ServerSettings", "byte_size"]
