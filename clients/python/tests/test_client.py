"""The blocking client against a live samplerd."""
import json

import numpy as np
import pytest
import torch

import samplerd
from samplerd import Regime
from conftest import GOLDEN
from scripted import generate, model

CLARIFY_TOKEN = 2564  # the built-in profiles' clarifying_token


def golden_case(name):
    cases = {c["name"]: c for c in json.loads((GOLDEN / "cases.json").read_text())["cases"]}
    c = cases[name]
    logits = np.load(GOLDEN / c["logits"])
    attention = np.load(GOLDEN / c["attention"]) if c["attention"] else None
    return c, logits, attention


def test_health_and_profiles(client):
    assert client.health() == "SERVING"
    resp = client.list_profiles()
    assert resp.default_profile == "entropix"
    assert {"entropix", "entropix-frog", "fixed"} <= {p.name for p in resp.profiles}


def test_health_speaks_the_generated_grpc_health_v1_messages(client):
    import grpc
    from samplerd.v1 import health_pb2

    assert health_pb2.DESCRIPTOR.name == "grpc/health/v1/health.proto"  # the vendored proto/grpc/health/v1
    assert client.health("samplerd.v1.Sampler") == "SERVING"
    with pytest.raises(grpc.RpcError) as e:
        client.health("no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_step_returns_dataclass_and_keeps_recent_tokens(client):
    s = client.session("keeps-recent", seed=11, recent_tokens=[5, 6, 7], max_recent=6, top_logprobs=3)
    results = []
    prev = 1
    for i in range(5):
        logits, attention = model(i, prev)
        r = s.step(logits, attention)
        assert isinstance(r, samplerd.StepResult) and r.step == i and r.sequence_id == "keeps-recent"
        assert 0 <= r.token < logits.size and r.logprob <= 0
        assert r.regime in (Regime.ARGMAX, Regime.CLARIFY, Regime.EXPLORE, Regime.RESAMPLE, Regime.ADAPTIVE)
        assert r.metrics.logits_entropy is not None and r.metrics.attn_entropy is not None
        assert len(r.top) == 3 and r.top[0].logprob >= r.top[1].logprob
        assert r.seed == 11 and r.profile == "entropix"
        results.append(r.token)
        prev = r.token
    assert s.step_index == 5
    assert s.recent_tokens == ([5, 6, 7] + results)[-6:]


def test_recent_tokens_reach_the_server(client):
    # Uniform logits are CLARIFY: the clarifying token is emitted unless it is already the last recent token;
    # the second step must see the first one's token and draw instead.
    s = client.session("clarify", seed=3)
    uniform = np.zeros(32000, np.float32)
    r0 = s.step(uniform)
    assert (r0.regime, r0.token) == (Regime.CLARIFY, CLARIFY_TOKEN)
    r1 = s.step(uniform)
    assert r1.regime == Regime.CLARIFY and r1.applied.temperature is not None and r1.applied.temperature > 0
    assert s.recent_tokens == [CLARIFY_TOKEN, r1.token]


def test_same_seed_same_tokens_other_seed_differs(client):
    a = generate(client.session("det", seed=99), 30)
    b = generate(client.session("det", seed=99), 30)
    c = generate(client.session("det", seed=100), 30)
    assert a == b
    assert a != c


def test_attention_metrics_absent_without_attention(client):
    logits, _ = model(0, 1)
    r = client.session("no-attn", seed=1).step(logits)
    assert r.metrics.logits_entropy is not None
    assert r.metrics.attn_entropy is None and r.metrics.agreement is None


@pytest.mark.parametrize("encoding", ["numpy_f32", "torch_f32", "torch_bf16", "raw_bf16", "numpy_f16"])
def test_dtypes_match_golden_metrics_and_regime(client, encoding):
    c, logits, attention = golden_case("bf16_exact_32k")
    if encoding == "torch_f32":
        logits, attention = torch.from_numpy(logits), torch.from_numpy(attention)
    elif encoding == "torch_bf16":
        logits, attention = torch.from_numpy(logits).bfloat16(), torch.from_numpy(attention).bfloat16()
    elif encoding == "raw_bf16":
        logits = samplerd.Raw.bf16(logits.view(np.uint32) >> 16)
        attention = samplerd.Raw.bf16(attention.view(np.uint32) >> 16)
    elif encoding == "numpy_f16":
        # f16 rounds these values, so only the regime (far from every bound) is compared below.
        logits, attention = logits.astype(np.float16), attention.astype(np.float16)
    r = client.session("bf16-exact", seed=c["seed"], recent_tokens=c["recent_tokens"]).step(logits, attention)
    assert r.regime.name == c["regimes"]["entropix"]["regime"]
    if encoding != "numpy_f16":
        for name, expected in c["metrics"].items():
            assert getattr(r.metrics, name) == pytest.approx(expected, rel=1e-4, abs=1e-6), name


def test_golden_regimes_and_top_logprobs(client):
    cases = json.loads((GOLDEN / "cases.json").read_text())["cases"]
    checked = 0
    for c in cases:
        if c["expect_error"]:
            continue
        _, logits, attention = golden_case(c["name"])
        s = client.session(c["name"], seed=c["seed"], recent_tokens=c["recent_tokens"], top_logprobs=5)
        r = s.step(logits, attention)
        assert r.regime.name == c["regimes"]["entropix"]["regime"], c["name"]
        for got, want in zip(r.top, c["logprob_of"]):
            assert got.logprob == pytest.approx(want["logprob"], abs=1e-3), c["name"]
        if c["regimes"]["entropix"]["action"] == "greedy":
            assert r.token == c["argmax"], c["name"]
        checked += 1
    assert checked >= 20


def test_a_sequence_id_over_256_bytes_is_a_step_error_not_a_protocol_error(client):
    # The server echoes only its first 256 bytes (cut at a character boundary: "é" is 2 bytes).
    s = client.session("a" * 255 + "é" * 10, seed=5)
    with pytest.raises(samplerd.StepError) as e:
        s.step(np.zeros(100, np.float32))
    assert e.value.code.name == "INVALID_ARGUMENT" and e.value.field == "sequence_id"
    assert s.step_index == 0


def test_rejected_step_raises_and_does_not_advance(client):
    s = client.session("reject", seed=5, recent_tokens=[1])
    with pytest.raises(samplerd.StepError) as e:
        s.step(np.full(100, -np.inf, np.float32))
    assert e.value.code.name == "INVALID_ARGUMENT" and "logits" in e.value.field
    assert s.step_index == 0 and s.recent_tokens == [1]
    r = s.step(np.zeros(100, np.float32))
    assert r.step == 0 and s.step_index == 1


def test_server_picked_seed_is_adopted(client):
    s = client.session("seedless")
    logits, _ = model(0, 1)
    r0 = s.step(logits)
    assert r0.seed != 0 and s.seed == r0.seed
    r1 = s.step(logits)
    assert r1.seed == r0.seed


def test_params_override_and_fixed_profile(client):
    logits, _ = model(2, 3)
    r = client.session("greedy", seed=1, profile="fixed", params={"temperature": 0.0}).step(logits)
    assert r.regime == Regime.FIXED and r.applied.temperature == 0.0
    assert r.token == int(np.argmax(logits))
    r = client.session("topk", seed=1, profile="fixed").step(logits, params=samplerd.Params(top_k=3))
    assert r.applied.top_k == 3 and r.token in np.argsort(-logits)[:3]
    with pytest.raises(ValueError, match="unknown sampling parameter"):
        client.session("bad", params={"temprature": 1.0})


def test_sample_batch_equals_stepping_each_session(client):
    ids = ["b0", "b1", "b2"]
    sessions = [client.session(i, seed=7, profile=p) for i, p in zip(ids, ["entropix", "entropix-frog", "fixed"])]
    singles = [client.session(i, seed=7, profile=p) for i, p in zip(ids, ["entropix", "entropix-frog", "fixed"])]
    prev = [1, 2, 3]
    for step in range(10):
        inputs = [model(step, t) for t in prev]
        batch = client.sample_batch([(s, lg, at) for s, (lg, at) in zip(sessions, inputs)])
        one = [s.step(lg, at) for s, (lg, at) in zip(singles, inputs)]
        assert [r.token for r in batch] == [r.token for r in one]
        assert [r.sequence_id for r in batch] == ids
        prev = [r.token for r in batch]
    assert all(s.step_index == 10 for s in sessions)


def test_sample_batch_partial_rejection(client):
    good, bad = client.session("good", seed=1), client.session("bad", seed=1)
    with pytest.raises(samplerd.BatchError) as e:
        client.sample_batch([(good, np.zeros(10, np.float32)), (bad, np.full(10, np.nan, np.float32))])
    ok, err = e.value.results
    assert isinstance(ok, samplerd.StepResult) and isinstance(err, samplerd.StepError)
    assert good.step_index == 1 and bad.step_index == 0
    with pytest.raises(ValueError, match="twice"):
        client.sample_batch([(good, np.zeros(10)), (good, np.zeros(10))])


def test_concurrent_threads_share_one_stream(client):
    from concurrent.futures import ThreadPoolExecutor

    def run(i):
        return generate(client.session(f"thread-{i}", seed=i + 1), 20)

    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(run, range(4)))
    alone = [run(i) for i in range(4)]
    assert together == alone


def test_unix_socket_and_dns_targets(spawn, sock_dir):
    sock = sock_dir / "samplerd.sock"
    srv = spawn(f"unix:{sock}", "127.0.0.1:0")
    port = srv.addresses[1].rsplit(":", 1)[1]
    tokens = []
    for target in (f"unix:{sock}", f"dns:///localhost:{port}"):
        with samplerd.Client(target) as c:
            tokens.append(generate(c.session("targets", seed=4), 10))
    assert tokens[0] == tokens[1]
