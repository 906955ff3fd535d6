"""The errors a remote run raises, below the modules that raise and handle them (``execute``
runs requests, ``resume`` keeps the finished ones)."""


class RemoteError(RuntimeError):
    """A remote run failed: the message says where (client, network, server) and why."""


class RemoteTransient(RemoteError):
    """A server state that passes (a backend reconnecting, a gateway error): worth a retry."""
