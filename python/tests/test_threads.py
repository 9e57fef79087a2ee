"""Long runs: the GIL is released during a solve, the callback sees every iteration and can stop
the run, Ctrl-C stops a run within one iteration and leaves the interpreter usable."""

import os
import signal
import threading
import time

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


def test_two_threads_solve_concurrently():
    nets = [heavy_network(s)[1] for s in (1, 2)]
    stamps = {0: [], 1: []}
    sols = {}

    def work(i):
        sols[i] = mv.solve(nets[i], iterations=40, callback=lambda rec: stamps[i].append(time.perf_counter()))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    # Meanwhile the main thread keeps running Python code.
    ticks = []
    while any(t.is_alive() for t in threads):
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    for t in threads:
        t.join()
    assert all(len(stamps[i]) == 40 for i in (0, 1))
    # Each run's iterations interleave with the other's: with the GIL held for a whole solve,
    # the second would start only after the first has finished.
    a0, a1 = stamps[0][0], stamps[0][-1]
    b0, b1 = stamps[1][0], stamps[1][-1]
    assert a0 < b1 and b0 < a1, "the two solves did not overlap"
    inside = [s for s in stamps[1] if a0 < s < a1] + [s for s in stamps[0] if b0 < s < b1]
    assert len(inside) >= 10
    # And the main thread was never blocked for long.
    gaps = np.diff(ticks)
    assert len(ticks) > 20 and gaps.max() < 0.5, gaps.max()
    np.testing.assert_array_equal(sols[0].estimates[0], mv.solve(nets[0], iterations=40).estimates[0])


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


def test_ctrl_c_stops_within_one_iteration():
    net = heavy_network(5)[1]
    per_iteration = mv.solve(net, iterations=5).history["seconds"].max()
    armed = threading.Event()

    def handler(signum, frame):
        if armed.is_set():
            raise KeyboardInterrupt
    previous = signal.signal(signal.SIGINT, handler)
    try:
        sent = []

        def interrupt():
            time.sleep(0.3)
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        armed.set()
        timer = threading.Thread(target=interrupt)
        timer.start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            mv.solve(net, iterations=100000)  # would take minutes
        caught = time.perf_counter()
        armed.clear()
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert caught - start < 30
    # Within one iteration of the signal (plus scheduling slack).
    assert caught - sent[0] < 2 * per_iteration + 0.5, (caught - sent[0], per_iteration)
    # The interpreter is usable, and so is the network.
    assert mv.solve(net, iterations=2).iterations == 2


def test_experiment_callback_gets_progress():
    ticks = []
    res = mv.fig2(ntr=[60, 80], snr_db=[10.0], trials=2, methods=["ml-mat-vamp"], vamp={"iterations": 2},
                  problem={"nin": 20, "nts": 50}, callback=lambda *a: ticks.append(a))
    assert len(ticks) == 4 and ticks[-1][1:3] == (4, 4)
    assert list(res["points"]["ntr"]) == [60, 80]


def test_ctrl_c_stops_an_experiment():
    """The sweep runs on a helper thread; Ctrl-C on the calling thread stops it after the trials
    in flight."""
    armed = threading.Event()

    def handler(signum, frame):
        if armed.is_set():
            raise KeyboardInterrupt
    previous = signal.signal(signal.SIGINT, handler)
    try:
        def interrupt():
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)

        armed.set()
        timer = threading.Thread(target=interrupt)
        timer.start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            # About a minute of trials if it were not stopped.
            mv.fig2(ntr=[400, 800, 1000], trials=10, snr_db=[10.0], methods=["ml-mat-vamp", "adam"])
        elapsed = time.perf_counter() - start
        armed.clear()
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert elapsed < 15, elapsed
