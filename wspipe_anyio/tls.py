"""TLS contexts for the client listener and for ``wss://`` backends."""

from __future__ import annotations

import ssl


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A TLS context for the client listener, from a PEM certificate chain and key.

    :raises OSError: A file cannot be read.
    :raises ssl.SSLError: The certificate or key is invalid or they do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def backend_context(cafile: str | None = None) -> ssl.SSLContext:
    """A TLS context for ``wss://`` backends: certificates and host names are verified.

    :param cafile: PEM bundle of CAs to trust instead of the system's.
    """
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
