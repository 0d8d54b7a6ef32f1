"""Client(options=..., interceptors=...): the caller's gRPC channel arguments and interceptors reach every call."""
import asyncio

import grpc
import numpy as np
import pytest

import samplerd


class _Recorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Records each call's method."""

    def __init__(self):
        self.methods = []

    def intercept_unary_unary(self, continuation, details, request):
        self.methods.append(details.method)
        return continuation(details, request)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        self.methods.append(details.method)
        return continuation(details, request_iterator)


def test_interceptors_see_every_call(server):
    recorder = _Recorder()
    with samplerd.Client(server.address, interceptors=[recorder]) as c:
        c.list_profiles()
        c.session("intercepted", seed=1).step(np.zeros(100, np.float32))
    assert "/samplerd.v1.Sampler/ListProfiles" in recorder.methods
    assert "/samplerd.v1.Sampler/Sample" in recorder.methods


def test_channel_options_replace_the_defaults(server):
    # A 16-byte receive limit (the client's default is 64 MiB): the profile list no longer fits.
    with samplerd.Client(server.address, options=[("grpc.max_receive_message_length", 16)]) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.list_profiles()
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with samplerd.Client(server.address) as c:
        assert len(c.list_profiles().profiles) == 3


class _AioRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.methods = []

    async def intercept_unary_unary(self, continuation, details, request):
        self.methods.append(details.method)
        return await continuation(details, request)


def test_async_client_takes_interceptors_and_options(server):
    async def main():
        recorder = _AioRecorder()
        async with samplerd.AsyncClient(server.address, interceptors=[recorder]) as c:
            await c.list_profiles()
        async with samplerd.AsyncClient(server.address, options=[("grpc.max_receive_message_length", 16)]) as c:
            with pytest.raises(grpc.RpcError) as e:
                await c.list_profiles()
        return recorder.methods, e.value.code()

    methods, code = asyncio.run(main())
    assert b"/samplerd.v1.Sampler/ListProfiles" in methods  # grpc.aio passes the method as bytes
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
