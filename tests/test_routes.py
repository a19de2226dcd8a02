"""Issue 23: the route of a plain call (check, describe, choose) is kept and taken again (headwise.routes),
never where it would skip a check or hide a change of what auto would choose."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import headwise
import headwise.checks
from headwise import routes
from headwise.backends import BACKENDS, Choice, tuning


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """An empty cache folder and memory, nothing measured on first use, no routes kept."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HEADWISE_TUNE", "0")
    tuning.forget()
    routes.ROUTES.clear()
    yield
    tuning.forget()
    routes.ROUTES.clear()


@pytest.fixture
def ran(monkeypatch):
    """The names of the backends run, in order: each registered backend wrapped to record its name."""
    names: list[str] = []
    for name, backend in list(BACKENDS.items()):

        def recording(*args, _run=backend.run, _name=name, **kwargs):
            names.append(_name)
            return _run(*args, **kwargs)

        monkeypatch.setitem(BACKENDS, name, dataclasses.replace(backend, run=recording))
    return names


def inputs(dtype=torch.float32, length=12):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, 4, length, 8, generator=gen, dtype=dtype) for _ in range(3)]  # (B, H, N, D)


def test_a_repeated_plain_call_takes_its_kept_route_and_computes_the_same(ran):
    q, k, v = inputs()
    first = headwise.attention(q, k, v, causal=True)
    ((_, route),) = routes.ROUTES.values()
    again = headwise.attention(q, k, v, causal=True)
    key = routes.plain_key(q, k, v, "auto", (None, True, None, 0.0, False, False, None, False))
    assert routes.find(key, routes.dispatch_state()) is route and routes.ROUTES[key][1] is route
    assert torch.equal(first, again) and ran == [route.choice.backend] * 2
    reference = headwise.attention(q.double(), k.double(), v.double(), causal=True, backend="reference")
    torch.testing.assert_close(again.double(), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"mask": torch.ones(12, 12, dtype=torch.bool)},
        {"score_mod": headwise.masks.softcap(5.0)},
        {"causal": 1},
        {"scale": 1},
        {"dropout_p": 0},
    ],
    ids=["mask", "score_mod", "causal=1", "scale=1", "dropout_p=0"],
)
def test_a_call_that_is_not_plain_keeps_no_route(options):
    q, k, v = inputs()
    try:
        headwise.attention(q, k, v, **options)
    except TypeError:  # causal=1: refused by the check, which every such call still takes
        assert options == {"causal": 1}
    assert routes.ROUTES == {}


def test_bad_arguments_are_refused_after_a_kept_route_of_the_same_shapes():
    q, k, v = inputs()
    headwise.attention(q, k, v)
    with pytest.raises(TypeError, match="causal must be a bool"):
        headwise.attention(q, k, v, causal=1)
    with pytest.raises(ValueError, match="scale must be finite"):
        headwise.attention(q, k, v, scale=math.nan)
    with pytest.raises(TypeError, match="share one dtype"):
        headwise.attention(q, k.double(), v)
    with pytest.raises(TypeError, match="backend must be a string"):
        headwise.attention(q, k, v, backend=3)
    with pytest.raises(ValueError, match="backend must be one of"):
        headwise.attention(q, k, v, backend="nope")


def test_a_call_the_size_check_refuses_keeps_no_route(monkeypatch):
    """The size check is a function of the route's Request and choice (and of the machine's memory, read
    once per process), so it runs when the route is made, and a refused call is never kept."""
    q, k, v = inputs()
    with monkeypatch.context() as patch:
        patch.setattr(headwise.checks, "physical_memory", lambda: 1024)  # a machine of 1 KiB
        with pytest.raises(ValueError, match="this machine has"):
            headwise.attention(q, k, v)
    assert not routes.ROUTES
    headwise.attention(q, k, v)
    assert len(routes.ROUTES) == 1


def test_a_kept_route_follows_a_measurement_a_forgotten_cache_and_the_thread_count(ran):
    q, k, v = inputs()
    headwise.attention(q, k, v)
    static = ran[-1]
    other = "dense" if static != "dense" else "chunked"
    ((_, route),) = routes.ROUTES.values()
    request = route.request
    tuning.TUNER._choices = {tuning.key(request): Choice(other, torch.float32)}  # as a measurement keeps it
    headwise.attention(q, k, v)
    assert ran[-1] == other
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before > 1 else 2)  # a key of another thread count: nothing measured
        headwise.attention(q, k, v)
        assert ran[-1] == static
    finally:
        torch.set_num_threads(before)
    headwise.attention(q, k, v)
    assert ran[-1] == other
    tuning.forget()  # the file has nothing: the static choice again
    headwise.attention(q, k, v)
    assert ran[-1] == static


def test_a_kept_route_follows_the_tuning_switch(ran, monkeypatch):
    q, k, v = inputs(torch.bfloat16, length=96)  # bf16 on the CPU: measured on first use when on
    headwise.attention(q, k, v)
    calls = len(ran)
    monkeypatch.setenv("HEADWISE_TUNE", "1")
    headwise.attention(q, k, v)  # switched on: measured now, one call of each candidate and more
    assert len(ran) > calls + 2


def test_a_kept_route_follows_the_registry(ran, monkeypatch):
    q, k, v = inputs()
    headwise.attention(q, k, v)
    assert ran[-1] == "sdpa"  # float32 forward: the static order's first
    sdpa = BACKENDS["sdpa"]
    unranked = dataclasses.replace(
        sdpa.capabilities, rank=dataclasses.replace(sdpa.capabilities.rank, cpu=None)
    )
    monkeypatch.setitem(BACKENDS, "sdpa", dataclasses.replace(sdpa, capabilities=unranked))
    headwise.attention(q, k, v)
    assert ran[-1] != "sdpa"


def test_routes_are_forgotten_at_once_past_the_limit(monkeypatch):
    monkeypatch.setattr(routes, "LIMIT", 3)
    for length in range(1, 6):
        headwise.attention(*inputs(length=length))
    assert len(routes.ROUTES) == 2  # five kinds of call: kept, kept, kept, forgotten at the fourth, kept


def test_a_kept_route_follows_grad_mode_and_requires_grad(ran):
    """float32 on the CPU with Dv != Dh: SDPA forward only, dense when a backward follows (SDPA's CPU
    backward there is not as accurate as eager's: tuning.accurate_backward)."""
    q, k, _ = inputs()
    v = torch.randn(2, 4, 12, 6)  # (B, H, N, Dv)
    with torch.no_grad():
        headwise.attention(q.requires_grad_(), k, v)
    assert ran[-1] == "sdpa"
    headwise.attention(q, k, v).sum().backward()
    assert ran[-1] == "dense" and q.grad is not None
    headwise.attention(q.detach(), k, v)
    assert ran[-1] == "sdpa" and len(routes.ROUTES) == 2


def test_a_kept_route_follows_deterministic_mode_and_is_bypassed_by_a_trace(ran):
    q, k, v = inputs()
    headwise.attention(q, k, v)
    kept = dict(routes.ROUTES)
    torch.use_deterministic_algorithms(True)
    try:
        headwise.attention(q, k, v)  # chosen again under the other mode, and kept under it
        assert set(routes.ROUTES) == set(kept) and kept != routes.ROUTES
    finally:
        torch.use_deterministic_algorithms(False)
    with headwise.trace() as recorded:
        headwise.attention(q, k, v)
    assert ran[-1] == "reference" and recorded.steps  # the textbook's steps, not the kept route's backend


def test_a_call_a_backend_with_limits_could_serve_keeps_no_route(monkeypatch):
    """limits read the environment (triton: whether it is installed, TRITON_INTERPRET), which no
    dispatch state holds: a call that such a backend could serve is chosen anew each time."""
    dense = BACKENDS["dense"]
    limited = dataclasses.replace(dense.capabilities, limits=lambda request: None)
    monkeypatch.setitem(BACKENDS, "dense", dataclasses.replace(dense, capabilities=limited))
    headwise.attention(*inputs())  # dense is ranked on the CPU: it could serve this call
    assert routes.ROUTES == {}
