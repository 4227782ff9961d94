"""The server's gRPC services (SPIRE's ``spire.api.server.*.v1``) and the gates in front of them.

Each service is a class over one :class:`~pyspire.server.context.ServerContext`; wrap it with
:class:`~pyspire.transport.calls.WithCallContext` and a gate from :mod:`pyspire.server.api.gate`
to serve it.
"""
