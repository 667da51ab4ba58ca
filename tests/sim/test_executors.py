"""The Compiled Graph executor's teardown is bounded, and which errors count as faults (a fake graph
and a fake `ray`: no Ray here)."""

import threading
import time
import types

from worldssm.sim.executors import CompiledExecutor, is_fault


class _Ref:
    def __init__(self):
        self.done = threading.Event()


class _Ray:
    """The two calls the teardown makes: `wait` (is this loop's task done?) and `kill`."""

    def __init__(self, refs):
        self.refs, self.killed = refs, []

    def wait(self, refs, timeout=None):
        return [r for r in refs if r.done.is_set()], [r for r in refs if not r.done.is_set()]

    def kill(self, actor):
        self.killed.append(actor)
        self.refs[actor].done.set()  # a killed actor's graph loop task fails: it is done


class _Graph:
    """Like Ray's: teardown returns only once every actor's graph loop has exited."""

    def __init__(self, refs):
        self.worker_task_refs = refs
        self.calls = 0

    def teardown(self):
        self.calls += 1
        for ref in self.worker_task_refs.values():
            ref.done.wait()


def executor(refs, teardown_s):
    ex = CompiledExecutor.__new__(CompiledExecutor)  # the graph itself is faked
    ex.ray, ex.cdag, ex.teardown_s = _Ray(refs), _Graph(refs), teardown_s
    return ex


def test_a_graph_loop_that_never_exits_is_killed_and_the_teardown_returns():
    refs = {"env0": _Ref(), "env1": _Ref(), "engine": _Ref()}
    refs["env1"].done.set()  # this loop exited (its actor died); the other two keep polling
    ex = executor(refs, teardown_s=0.2)
    t0 = time.monotonic()
    killed = ex.teardown()
    assert time.monotonic() - t0 < 2.0
    assert sorted(killed) == ["engine", "env0"] and sorted(ex.ray.killed) == ["engine", "env0"]
    assert ex.cdag is None and ex.teardown() == []  # once only


def test_a_teardown_that_finishes_kills_nothing():
    refs = {"env0": _Ref(), "engine": _Ref()}
    for r in refs.values():
        r.done.set()
    ex = executor(refs, teardown_s=5.0)
    graph = ex.cdag
    assert ex.teardown() == [] and ex.ray.killed == [] and graph.calls == 1


class GetTimeoutError(Exception):
    pass


class RayActorError(Exception):
    pass


def test_faults_are_rays_errors_themselves_wrapped_or_chained():
    ray = types.SimpleNamespace(exceptions=types.SimpleNamespace(GetTimeoutError=GetTimeoutError,
                                                                 RayActorError=RayActorError))
    assert is_fault(ray, RayActorError("died"))
    wrapped = RuntimeError("remote")
    wrapped.cause = RayActorError("died")
    assert is_fault(ray, wrapped)
    try:  # what CompiledDAGRef.get raises when the graph loops' errors do not come within 10 s
        try:
            raise GetTimeoutError("10 s")
        except GetTimeoutError as t:
            raise Exception("Timed out when getting the actor execution loop exception.") from t
    except Exception as e:  # noqa: BLE001
        assert is_fault(ray, e)
    assert not is_fault(ray, ValueError("a bug"))
    chained = ValueError("a bug")
    chained.__cause__ = KeyError("another bug")
    assert not is_fault(ray, chained)
