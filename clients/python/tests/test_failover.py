"""A session whose server dies mid-generation resumes on another one and draws the same tokens."""
import signal
import threading
import time

import numpy as np
import pytest

import samplerd
from scripted import generate

STEPS = 60


def reference(address):
    with samplerd.Client(address) as c:
        return generate(c.session("failover", seed=2024, profile="entropix"), STEPS)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_endpoint_list_survives_a_dead_server(spawn, sig):
    a = spawn("127.0.0.1:0", extra=("--drain_seconds", "1"))
    b = spawn("127.0.0.1:0")
    expected = reference(b.address)
    with samplerd.Client([a.address, b.address], timeout=5) as c:
        session = c.session("failover", seed=2024, profile="entropix")

        def kill_a(i):
            if i == 20:
                assert c.active_endpoint == a.address
                a.kill(sig)

        got = generate(session, STEPS, on_step=kill_a)
        assert c.failovers >= 1 and c.active_endpoint == b.address
    assert a.proc.returncode == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert got == expected


def test_round_robin_target_survives_each_server_dying_in_turn(spawn):
    # One target resolving to two addresses (what dns:/// gives for a name with two A records), balanced by
    # round_robin. Each server is killed in turn, so whichever carried the stream, one kill hits it.
    a = spawn("127.0.0.1:0")
    port = a.address.rsplit(":", 1)[1]
    b = spawn(f"127.0.0.2:{port}")
    expected = reference(a.address)
    with samplerd.Client(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}", timeout=5) as c:
        session = c.session("failover", seed=2024, profile="entropix")
        restarted = []

        def churn(i):
            if i == 15:
                a.kill()
            elif i == 30:
                restarted.append(spawn(f"127.0.0.1:{port}"))
                b.kill()

        got = generate(session, STEPS, on_step=churn)
    # Every step answered, as one server would have: across two deaths. (No count of failovers is asserted: a
    # stream that breaks between two steps is reopened by the next one without a failed attempt, one that breaks
    # during a step is retried, and which happens is a race with the process's exit.)
    assert len(got) == STEPS
    assert got == expected


def test_all_endpoints_dead_raises_unavailable(spawn):
    a = spawn("127.0.0.1:0")
    address = a.address
    a.kill()
    with samplerd.Client([address], timeout=1, failover_timeout=1) as c:
        t0 = time.monotonic()
        with pytest.raises(samplerd.Unavailable):
            generate(c.session("nobody", seed=1), 1)
        assert time.monotonic() - t0 < 10


def test_a_replica_back_within_the_failover_timeout_gets_the_step(spawn, sock_dir):
    # Nothing listens when the step starts; the replica comes up 0.5 s later, well within the 3 s of failover. The
    # client must take up the new connection during its backoff, not when grpcio's backup poller (every 5 s) would.
    path = sock_dir / "replica.sock"
    outcome = []
    with samplerd.Client(f"unix:{path}", timeout=2, failover_timeout=3) as c:
        session = c.session("back", seed=1)

        def step():
            try:
                outcome.append(session.step(np.zeros(1000, np.float32)))
            except Exception as e:  # the outcome under test
                outcome.append(e)

        caller = threading.Thread(target=step)
        caller.start()
        time.sleep(0.5)
        spawn(f"unix:{path}")
        caller.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], samplerd.StepResult), outcome
        assert session.step_index == 1
