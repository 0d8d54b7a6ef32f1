"""Generated stubs of proto/samplerd/v1 (sampler_pb2, sampler_pb2_grpc, profile_pb2) and of the vendored
proto/grpc/health/v1 (health_pb2: the grpc.health.v1 messages).

The modules next to this file are written by `samplerd/_gen.py` from the .proto files (when the sdist or wheel
is built, and by hand for the copies in git); never edit them by hand.
"""
