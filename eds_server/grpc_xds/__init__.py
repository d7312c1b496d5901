"""gRPC xDS: EDS and ADS streams (state of the world and delta) served from the discovery core.

Thin: protobuf in and out (wire.py), one asyncio task pair per stream
(streams.py), the servicers xds-protos defines (servicers.py), the grpc.aio
server (server.py). What to push, ACKs and NACKs live in the core (xds/).
"""
