#!/usr/bin/python3
"""Scale-out client for samplerd: many concurrent generations through one round_robin channel, with failover.

Plays a model host: each sequence computes its next logits and attention from its own token history (a toy,
deterministic "model"), sends the step with the sequence's seed and recent_tokens, and appends the returned
token. Because the client owns all of a step's state (docs/contract.md section 5), a step whose call fails can be sent
again to any replica and must come back with the same token; that is what this driver checks.

Even-numbered sequences use the bidirectional `Sample` stream (one stream per sequence, reopened after a
failure), odd-numbered ones the unary `SampleOnce` (round_robin spreads every call). A step is retried, on a new
stream for the streaming sequences, after UNAVAILABLE / CANCELLED / DEADLINE_EXCEEDED / UNKNOWN / INTERNAL /
ABORTED or a stream that ends before answering; each retry counts as one failover.

  driver.py run --target ipv4:127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3 --sequences 16 --steps 300 \
      --out run.json [--reference single.json] [--event 0.3:PID:KILL --event 0.5:PID:TERM] [--pace-ms 5]
  driver.py health --target 127.0.0.1:P [--wait 10]      exit 0 once the server answers SERVING
  driver.py profiles --target 127.0.0.1:P                  prints the profile names, one a line
  driver.py once --target 127.0.0.1:P                      one SampleOnce; prints the StepResult as JSON

`run` prints `scaleout: sequences=S steps=N failovers=F lost=L duplicated=D mismatches=M` last and exits non-zero
when a sequence did not finish, a step is missing or was answered twice, a step came back with an error, a
token differs from --reference, or events were requested and no failover happened.

Needs Debian's python3-grpcio, python3-protobuf and python3-numpy (so /usr/bin/python3), and protoc with
grpc_python_plugin: the stubs are generated from proto/ into a temporary folder at start.
"""

import argparse
import atexit
import collections
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VOCAB = 4096
LAYERS, HEADS, MAX_KV = 2, 4, 96
PROMPT_LEN, RECENT = 8, 64
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
}
# round_robin over every address of the target; the health watch takes a draining (NOT_SERVING) replica out
# of the rotation before its listener closes.
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
    }
)


def load_stubs():
    """Generates the Python stubs of proto/ into a temporary folder and imports them."""
    out = tempfile.mkdtemp(prefix="samplerd-stubs-")
    atexit.register(shutil.rmtree, out, True)
    protos = [os.path.join("samplerd", "v1", p) for p in ("profile.proto", "sampler.proto")]
    plugin = "/usr/bin/grpc_python_plugin"
    cmd = [
        "protoc",
        "-I",
        os.path.join(REPO, "proto"),
        "--python_out",
        out,
        "--grpc_out",
        out,
        "--plugin=protoc-gen-grpc=" + plugin,
    ] + protos
    subprocess.run(cmd, check=True)
    sys.path.insert(0, out)
    from samplerd.v1 import sampler_pb2, sampler_pb2_grpc  # noqa: E402 (generated above)

    return sampler_pb2, sampler_pb2_grpc


def make_channel(target):
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.max_receive_message_length", 64 << 20),
        ],
    )


def health_status(channel, timeout):
    """grpc.health.v1.Health/Check for the whole server, without generated stubs: the request is an empty
    HealthCheckRequest, the reply field 1 (varint) the ServingStatus (1 = SERVING, 2 = NOT_SERVING)."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    reply = check(b"", timeout=timeout)
    if len(reply) >= 2 and reply[0] == 0x08:
        return reply[1]
    return 0  # UNKNOWN (field absent)


class ToyModel:
    """Deterministic stand-in for a language model: logits and attention are a hash of the sequence, the step
    and its last tokens, so one wrong token changes every later step's input."""

    def __init__(self, index):
        self.index = index
        rng = np.random.default_rng(10_000 + index)
        self.prompt = [int(t) for t in rng.integers(0, VOCAB, PROMPT_LEN)]

    def inputs(self, step, history):
        key = "%d:%d:%s" % (self.index, step, ",".join(map(str, history[-4:])))
        rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little"))
        kind = rng.random()
        if kind < 0.15:
            # Confident: one token far ahead (ARGMAX territory).
            logits = rng.standard_normal(VOCAB) * 0.05
            logits[rng.integers(VOCAB)] += 25.0
        elif kind < 0.55:
            # A handful of plausible tokens over a flat tail.
            logits = rng.standard_normal(VOCAB) * 0.5
            logits[rng.integers(0, VOCAB, 12)] += rng.uniform(3.0, 8.0, 12)
        else:
            # Broad and uneven.
            logits = rng.standard_normal(VOCAB) * rng.uniform(1.0, 4.0)
        kv = min(MAX_KV, PROMPT_LEN + step + 1)
        attention = rng.standard_normal((LAYERS, HEADS, kv)) * rng.uniform(0.5, 4.0)
        return logits.astype("<f4"), attention.astype("<f4")


class Run:
    def __init__(self, args, pb, pb_grpc):
        self.args = args
        self.pb = pb
        self.channel = make_channel(args.target)
        self.stub = pb_grpc.SamplerStub(self.channel)
        self.lock = threading.Lock()
        self.results = [dict() for _ in range(args.sequences)]  # step -> (token, regime)
        self.duplicated = 0
        self.step_errors = []
        self.failovers = 0
        self.failover_codes = collections.Counter()
        self.failovers_by_phase = collections.Counter()
        self.phase = 0  # number of events fired so far
        self.done = 0
        self.failed = []  # (sequence, reason)
        self.inflight = {}  # sequence -> (call, started) for the watchdog
        self.stop = threading.Event()

    # -- bookkeeping ----------------------------------------------------------------------------------
    def record(self, seq, step, response):
        if len(response.results) != 1:
            raise RuntimeError("seq %d step %d: %d results for 1 step" % (seq, step, len(response.results)))
        r = response.results[0]
        if r.sequence_id != self.seq_id(seq) or r.step != step:
            raise RuntimeError("seq %d step %d: answer is for %s step %d" % (seq, step, r.sequence_id, r.step))
        if r.HasField("error"):
            with self.lock:
                self.step_errors.append(
                    "%s step %d: code %d %s: %s" % (r.sequence_id, step, r.error.code, r.error.field, r.error.message)
                )
            raise RuntimeError("step rejected: " + self.step_errors[-1])
        with self.lock:
            if step in self.results[seq]:
                self.duplicated += 1
            else:
                self.results[seq][step] = (r.token, r.regime)
                self.done += 1
        return r.token

    def failover(self, seq, step, why):
        with self.lock:
            self.failovers += 1
            self.failover_codes[why] += 1
            self.failovers_by_phase[self.phase] += 1
        if self.args.verbose:
            print("failover: seq %d step %d: %s" % (seq, step, why), flush=True)

    def seq_id(self, seq):
        return "seq-%02d" % seq

    def make_request(self, seq, model, step, history):
        logits, attention = model.inputs(step, history)
        s = self.pb.Step(
            sequence_id=self.seq_id(seq),
            step=step,
            seed=1_000_003 * (seq + 1),
            profile=self.args.profile,
            recent_tokens=history[-RECENT:],
        )
        s.logits.dtype = self.pb.DTYPE_F32
        s.logits.shape.append(VOCAB)
        s.logits.data = logits.tobytes()
        s.attention.dtype = self.pb.DTYPE_F32
        s.attention.shape.extend(attention.shape)
        s.attention.data = attention.tobytes()
        return self.pb.SampleRequest(steps=[s])

    def pace(self):
        if self.args.pace_ms > 0:
            time.sleep(self.args.pace_ms / 1000.0)

    # -- the two kinds of sequence ----------------------------------------------------------------------
    def run_unary(self, seq):
        model = ToyModel(seq)
        history = list(model.prompt)
        step, attempts = 0, 0
        while step < self.args.steps and not self.stop.is_set():
            self.pace()
            request = self.make_request(seq, model, step, history)
            try:
                call = self.stub.SampleOnce.future(request, timeout=self.args.step_timeout, wait_for_ready=True)
                with self.lock:
                    self.inflight[seq] = (call, time.monotonic())
                response = call.result()
            except grpc.RpcError as e:
                code = e.code()
                if code not in RETRYABLE or attempts >= self.args.max_attempts:
                    raise RuntimeError("SampleOnce step %d: %s %s" % (step, code, e.details()))
                attempts += 1
                self.failover(seq, step, code.name)
                time.sleep(0.02)
                continue
            finally:
                with self.lock:
                    self.inflight.pop(seq, None)
            history.append(self.record(seq, step, response))
            step, attempts = step + 1, 0

    def run_stream(self, seq):
        model = ToyModel(seq)
        history = list(model.prompt)
        step, attempts = 0, 0
        while step < self.args.steps and not self.stop.is_set():
            requests = queue.Queue()

            def feed(q=requests):
                while True:
                    item = q.get()
                    if item is None:
                        return
                    yield item

            call = self.stub.Sample(feed(), wait_for_ready=True)
            try:
                while step < self.args.steps and not self.stop.is_set():
                    self.pace()
                    requests.put(self.make_request(seq, model, step, history))
                    with self.lock:
                        self.inflight[seq] = (call, time.monotonic())
                    try:
                        response = next(call)
                    finally:
                        with self.lock:
                            self.inflight.pop(seq, None)
                    history.append(self.record(seq, step, response))
                    step, attempts = step + 1, 0
                requests.put(None)
                for extra in call:  # the stream must close with OK and nothing more
                    raise RuntimeError("stream answered %d results after the last step" % len(extra.results))
            except StopIteration:
                # The server closed the stream (OK) with our step unanswered: a drain that outlived its grace.
                if attempts >= self.args.max_attempts:
                    raise RuntimeError("Sample step %d: stream ended unanswered %d times" % (step, attempts))
                attempts += 1
                self.failover(seq, step, "STREAM_END")
            except grpc.RpcError as e:
                code = e.code()
                if code not in RETRYABLE or attempts >= self.args.max_attempts:
                    raise RuntimeError("Sample step %d: %s %s" % (step, code, e.details()))
                attempts += 1
                self.failover(seq, step, code.name)
                time.sleep(0.02)
            finally:
                requests.put(None)
                call.cancel()

    def worker(self, seq):
        try:
            (self.run_stream if seq % 2 == 0 else self.run_unary)(seq)
        except Exception as e:  # noqa: BLE001 (reported, and the run fails)
            with self.lock:
                self.failed.append((seq, str(e)))
            print("sequence %d failed: %s" % (seq, e), file=sys.stderr, flush=True)

    # -- watchdog and events ----------------------------------------------------------------------------
    def monitor(self, events, total):
        while not self.stop.wait(0.01):
            now = time.monotonic()
            with self.lock:
                overdue = [c for c, t in self.inflight.values() if now - t > self.args.step_timeout]
                done = self.done
            for c in overdue:
                c.cancel()  # surfaces as CANCELLED in the worker: counted as a failover
            while events and done >= events[0][0] * total:
                fraction, pid, sig = events.pop(0)
                print(
                    "event: %s to pid %d after %d/%d steps" % (signal.Signals(sig).name, pid, done, total), flush=True
                )
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    print("event: pid %d was already gone" % pid, file=sys.stderr, flush=True)
                with self.lock:
                    self.phase += 1

    def execute(self):
        args = self.args
        total = args.sequences * args.steps
        events = []
        for e in args.event:
            fraction, pid, name = e.split(":")
            events.append((float(fraction), int(pid), getattr(signal, "SIG" + name.upper())))
        events.sort()
        n_events = len(events)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            print("channel to %s not ready in 10 s" % args.target, file=sys.stderr)
            return 1
        # Let round_robin connect every address before the first stream is placed.
        time.sleep(0.3)
        started = time.monotonic()
        mon = threading.Thread(target=self.monitor, args=(events, total), daemon=True)
        mon.start()
        workers = [threading.Thread(target=self.worker, args=(i,)) for i in range(args.sequences)]
        for w in workers:
            w.start()
        deadline = started + args.max_seconds
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        timed_out = any(w.is_alive() for w in workers)
        self.stop.set()
        for w in workers:
            w.join(5)
        elapsed = time.monotonic() - started
        self.channel.close()

        tokens = [[self.results[s][k][0] for k in sorted(self.results[s])] for s in range(args.sequences)]
        regime_enum = self.pb.StepResult.DESCRIPTOR.fields_by_name["regime"].enum_type
        regimes = collections.Counter(
            regime_enum.values_by_number[r].name for res in self.results for _, r in res.values()
        )
        steps = sum(len(r) for r in self.results)
        lost = total - steps
        mismatches = 0
        if args.reference:
            with open(args.reference) as f:
                ref = json.load(f)["tokens"]
            for s in range(args.sequences):
                mine, theirs = tokens[s], ref[s] if s < len(ref) else []
                if mine != theirs:
                    mismatches += 1
                    first = next(
                        (i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs))
                    )
                    print(
                        "mismatch: %s differs from the reference at step %d" % (self.seq_id(s), first), file=sys.stderr
                    )
        report = {
            "target": args.target,
            "sequences": args.sequences,
            "steps": steps,
            "elapsed_seconds": elapsed,
            "failovers": self.failovers,
            "failover_codes": dict(self.failover_codes),
            "failovers_by_phase": {str(k): v for k, v in sorted(self.failovers_by_phase.items())},
            "lost": lost,
            "duplicated": self.duplicated,
            "mismatches": mismatches,
            "regimes": dict(regimes),
            "failed_sequences": self.failed,
            "step_errors": self.step_errors[:20],
            "tokens": tokens,
        }
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f)
        print(
            "driver: %d steps in %.2f s (%.0f steps/s); regimes %s; failovers by cause %s, by phase %s"
            % (
                steps,
                elapsed,
                steps / max(elapsed, 1e-9),
                dict(regimes),
                dict(self.failover_codes),
                report["failovers_by_phase"],
            )
        )

        problems = []
        if timed_out:
            problems.append("run did not finish in %d s" % args.max_seconds)
        if self.failed:
            problems.append("%d sequence(s) failed" % len(self.failed))
        if self.step_errors:
            problems.append("%d step(s) rejected" % len(self.step_errors))
        if lost or self.duplicated or mismatches:
            problems.append("lost=%d duplicated=%d mismatches=%d" % (lost, self.duplicated, mismatches))
        if events:
            problems.append("%d event(s) never fired" % len(events))
        if n_events and self.failovers == 0:
            problems.append("replicas were stopped but no call failed over: the stopped ones carried no traffic")
        draws = steps - regimes.get("REGIME_ARGMAX", 0)
        if steps and draws < steps // 4:
            problems.append(
                "only %d of %d steps drew at random: the determinism check would be trivial" % (draws, steps)
            )
        for p in problems:
            print("FAIL: " + p, file=sys.stderr)
        print(
            "scaleout: sequences=%d steps=%d failovers=%d lost=%d duplicated=%d mismatches=%d"
            % (args.sequences, steps, self.failovers, lost, self.duplicated, mismatches),
            flush=True,
        )
        return 1 if problems else 0


def cmd_health(args):
    channel = grpc.insecure_channel(args.target)
    deadline = time.monotonic() + args.wait
    last = "no answer"
    while True:
        try:
            status = health_status(channel, timeout=2)
            if status == 1:
                print("%s: SERVING" % args.target)
                return 0
            last = "status %d" % status
        except grpc.RpcError as e:
            last = "%s %s" % (e.code().name, e.details())
        if time.monotonic() >= deadline:
            print("%s: not SERVING (%s)" % (args.target, last), file=sys.stderr)
            return 1
        time.sleep(0.1)


def cmd_profiles(args, pb, pb_grpc):
    stub = pb_grpc.SamplerStub(grpc.insecure_channel(args.target))
    reply = stub.ListProfiles(pb.ListProfilesRequest(), timeout=5)
    for p in reply.profiles:
        print(p.name)
    print("default: " + reply.default_profile)
    return 0


def cmd_once(args, pb, pb_grpc):
    from google.protobuf import json_format

    run = Run(argparse.Namespace(target=args.target, sequences=1, profile=args.profile, pace_ms=0), pb, pb_grpc)
    model = ToyModel(0)
    reply = run.stub.SampleOnce(run.make_request(0, model, 0, list(model.prompt)), timeout=5)
    r = reply.results[0]
    print(json_format.MessageToJson(r, indent=None))
    if len(reply.results) != 1 or r.HasField("error") or not 0 <= r.token < VOCAB or r.sequence_id != "seq-00":
        print("SampleOnce: unexpected answer", file=sys.stderr)
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--target", required=True)
    run.add_argument("--sequences", type=int, default=16)
    run.add_argument("--steps", type=int, default=300)
    run.add_argument("--profile", default="")
    run.add_argument("--out")
    run.add_argument("--reference", help="JSON written by an earlier run; tokens must be equal")
    run.add_argument(
        "--event",
        action="append",
        default=[],
        help="FRACTION:PID:SIGNAL, e.g. 0.3:1234:KILL: signal PID once that share of steps is done",
    )
    run.add_argument("--pace-ms", type=float, default=0.0, help="sleep per step (the model's forward pass)")
    run.add_argument("--step-timeout", type=float, default=10.0, help="seconds before a step's call is cancelled")
    run.add_argument("--max-attempts", type=int, default=20, help="tries of one step before its sequence fails")
    run.add_argument("--max-seconds", type=float, default=300.0, help="the whole run's limit")
    run.add_argument("--verbose", action="store_true")
    for name in ("health", "profiles", "once"):
        p = sub.add_parser(name)
        p.add_argument("--target", required=True)
        if name == "health":
            p.add_argument("--wait", type=float, default=0.0, help="keep asking for this many seconds")
        if name == "once":
            p.add_argument("--profile", default="")
    args = parser.parse_args()
    if args.cmd == "health":
        return cmd_health(args)
    pb, pb_grpc = load_stubs()
    if args.cmd == "profiles":
        return cmd_profiles(args, pb, pb_grpc)
    if args.cmd == "once":
        return cmd_once(args, pb, pb_grpc)
    return Run(args, pb, pb_grpc).execute()


if __name__ == "__main__":
    sys.exit(main())
