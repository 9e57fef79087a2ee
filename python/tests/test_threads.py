"""Long runs: the GIL is released during a solve, the callback sees every iteration and can stop
the run, Ctrl-C stops a run within one iteration and leaves the interpreter usable."""

import os
import signal
import sys
import threading

import numpy as np
import pytest

import mlmatvamp as mv


def heavy_network(seed, n0=1000, n1=800, d=4):
    """A network whose iterations take a few milliseconds each."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n1, n0)) / np.sqrt(n0)
    model = mv.Network(mv.BernoulliGaussianPrior(0.2, d=d), n0, [mv.LinearLayer(W, d)],
                       mv.AwgnOutput(np.zeros((n1, d)), 100.0))
    return model.sample(seed=seed + 1)


@pytest.fixture
def no_forced_switches():
    """A huge switch interval: a thread holding the GIL keeps it until it releases it itself
    (a blocking call, or the extension detaching), so that interleaving proves the release."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    yield
    sys.setswitchinterval(previous)


def test_two_threads_solve_concurrently(no_forced_switches):
    """Thread A solves a network until told to stop; meanwhile the main thread solves another
    network to the end. If a solve held the GIL, the main thread could not even start until A's
    run had ended (A's callbacks never release the GIL by themselves with forced switches off):
    A would have run all its iterations. Instead A is still running, and made progress while the
    main thread's solve ran."""
    net_a, net_b = heavy_network(1)[1], heavy_network(2)[1]
    limit = 5000
    seen_a, stop, running = [], threading.Event(), threading.Event()

    def callback(record):
        seen_a.append(record["iteration"])
        running.set()
        return stop.is_set()

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "a", mv.solve(net_a, iterations=limit, callback=callback)))
    thread.start()
    try:
        assert running.wait(timeout=600)
        before = len(seen_a)
        seen_b = []
        sol_b = mv.solve(net_b, iterations=30, callback=lambda r: seen_b.append(len(seen_a)))
        during = len(seen_a) - before
        assert thread.is_alive() and len(seen_a) < limit, "the solve in thread A held the GIL"
    finally:
        stop.set()
        thread.join()
    assert sol_b.iterations == 30
    # A iterated while B's solve ran (both in the core at once).
    assert during > 0 and seen_b[-1] > seen_b[0], (before, seen_b)
    sol_a = result["a"]
    assert sol_a.iterations == len(seen_a) < limit
    # Concurrency changes nothing: the same numbers as a solve on its own.
    np.testing.assert_array_equal(sol_b.estimates[0], mv.solve(net_b, iterations=30).estimates[0])
    alone = mv.solve(net_a, iterations=sol_a.iterations)
    np.testing.assert_array_equal(sol_a.estimates[0], alone.estimates[0])


def test_callback_sees_every_iteration_and_stops():
    truth, net = heavy_network(3, n0=300, n1=200, d=2)
    seen = []

    def callback(record):
        seen.append(record)
        assert record["variables"][0]["cov"].shape == (2, 2)
        return record["iteration"] == 4  # stop after the fifth iteration

    sol = mv.solve(net, iterations=50, truth=truth, callback=callback)
    assert [r["iteration"] for r in seen] == [0, 1, 2, 3, 4]
    assert sol.iterations == 5 and not sol.converged
    assert sol.history["mse"].shape == (5, 2)
    assert np.isfinite(seen[-1]["variables"][0]["mse"])


def test_callback_exception_propagates():
    net = heavy_network(4, n0=300, n1=200, d=2)[1]

    class Boom(Exception):
        pass

    def callback(record):
        if record["iteration"] == 2:
            raise Boom("stop here")

    with pytest.raises(Boom, match="stop here"):
        mv.solve(net, iterations=50, callback=callback)
    assert mv.solve(net, iterations=3).iterations == 3  # still usable


@pytest.fixture
def sigint():
    """Python's own SIGINT handler (KeyboardInterrupt), and a function that sends a real SIGINT
    to this process from another thread once `ready` is set, calling `after()` right after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    helpers = []

    def send_when(ready, after=lambda: None):
        def run():
            if ready.wait(timeout=600):
                os.kill(os.getpid(), signal.SIGINT)
                after()
        t = threading.Thread(target=run)
        t.start()
        helpers.append(t)

    yield send_when
    for t in helpers:
        t.join()
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_within_one_iteration(sigint):
    """A real SIGINT sent while a long solve runs: KeyboardInterrupt, and at most the iteration
    in progress when the signal arrived completes after it."""
    net = heavy_network(5)[1]
    seen, ready, after_kill = [], threading.Event(), []

    def callback(record):
        seen.append(record["iteration"])
        if record["iteration"] == 3:
            ready.set()

    sigint(ready, lambda: after_kill.append(len(seen)))
    with pytest.raises(KeyboardInterrupt):
        mv.solve(net, iterations=100000, callback=callback)  # would take many minutes
    assert after_kill and len(seen) <= after_kill[0] + 1, (len(seen), after_kill)
    assert seen == list(range(len(seen)))
    # The interpreter is usable, and so is the network.
    assert mv.solve(net, iterations=2).iterations == 2


def test_ctrl_c_is_checked_by_the_binding_after_every_iteration(sigint):
    """The same with a callback that runs no Python code (`list.append`, through the extension
    directly): a Python signal handler only runs when Python code runs, so here it is the
    binding's own check after every iteration that stops the run."""
    net = heavy_network(7)[1]
    seen, ready, after_kill = [], threading.Event(), []

    def watch():
        while len(seen) < 3:
            ready.wait(0.001)
        ready.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    sigint(ready, lambda: after_kill.append(len(seen)))
    with pytest.raises(KeyboardInterrupt):
        mv._core._solve(net, 100000, None, None, None, 1e-6, seen.append, None)
    watcher.join()
    assert after_kill and len(seen) <= after_kill[0] + 1, (len(seen), after_kill)
    assert [r["iteration"] for r in seen] == list(range(len(seen)))


def test_ctrl_c_stops_the_state_evolution(sigint):
    net = heavy_network(6, n0=300, n1=200, d=2)[1]
    seen, ready, after_kill = [], threading.Event(), []

    def callback(record):
        seen.append(record["iteration"])
        if record["iteration"] == 2:
            ready.set()

    sigint(ready, lambda: after_kill.append(len(seen)))
    with pytest.raises(KeyboardInterrupt):
        mv.state_evolution(net, iterations=100000, n_mc=2000, callback=callback)
    assert after_kill and len(seen) <= after_kill[0] + 1, (len(seen), after_kill)
    assert mv.state_evolution(net, iterations=2, n_mc=500)["se_mse"].shape == (2, 2)


def test_experiment_callback_gets_progress():
    ticks = []
    res = mv.fig2(ntr=[60, 80], snr_db=[10.0], trials=2, methods=["ml-mat-vamp"], vamp={"iterations": 2},
                  problem={"nin": 20, "nts": 50}, callback=lambda *a: ticks.append(a))
    # One tick per finished trial, from the pool's threads: in any order.
    assert sorted(t[1] for t in ticks) == [1, 2, 3, 4] and {t[2] for t in ticks} == {4}
    assert list(res["points"]["ntr"]) == [60, 80]


def test_ctrl_c_stops_an_experiment(sigint):
    """The sweep runs on a helper thread; a SIGINT sent after its first finished trial stops it
    after the trials in flight: KeyboardInterrupt, and most of the 30 trials (3 ntr x 10, both methods in a trial) never run."""
    ticks, ready = [], threading.Event()

    def callback(label, done, total, error):
        ticks.append((done, total))
        ready.set()

    sigint(ready)
    with pytest.raises(KeyboardInterrupt):
        mv.fig2(ntr=[400, 800, 1000], trials=10, snr_db=[10.0], methods=["ml-mat-vamp", "adam"],
                callback=callback)
    total = ticks[0][1]
    assert total == 30 and len(ticks) < total // 2, ticks
    # Still usable.
    res = mv.fig2(ntr=[60], snr_db=[10.0], trials=1, methods=["ml-mat-vamp"], vamp={"iterations": 2},
                  problem={"nin": 20, "nts": 50})
    assert list(res["points"]["ntr"]) == [60]
