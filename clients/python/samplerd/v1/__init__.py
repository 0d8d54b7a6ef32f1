"""Generated stubs of proto/samplerd/v1 (sampler_pb2, sampler_pb2_grpc, profile_pb2).

The modules next to this file are written by `samplerd._gen` from the .proto files: at install time by the
build hook in setup.py, and in a source checkout on first import (or by `python -m samplerd._gen`). They are not
kept in git; never edit them by hand.
"""
