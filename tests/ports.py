"""Free local TCP ports, for tests that start a server or need an address nobody answers on."""
import socket


def free_port() -> int:
    """A TCP port of 127.0.0.1 that no process listens on (at the time of the call)."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]
