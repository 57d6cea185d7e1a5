"""fastadapter.bench.measure.saved_bytes: what it counts, that it holds nothing once its graph is dropped, and that a
backward through the graph it measured is the plain one (bench's first warm-up step trains through it)."""

import gc
import weakref

import torch

from fastadapter.bench.measure import saved_bytes


def _net(x, linear):
    return torch.softmax(linear(x), -1).exp().mul(x).sum()


def test_counts_unique_storages_without_the_excluded_parameters():
    linear = torch.nn.Linear(7, 7)
    x = torch.randn(5, 7, requires_grad=True)
    counted, _ = saved_bytes(lambda: _net(x, linear), exclude=linear.parameters())
    # linear saves x (and its weight, excluded); softmax its output; exp its output; mul both of its inputs
    # (exp's output again and x): three (5, 7) float32 storages
    assert counted == 3 * 5 * 7 * 4
    assert saved_bytes(lambda: _net(x, linear))[0] == counted + 7 * 7 * 4  # + the weight


def test_a_dropped_graph_frees_what_it_saved():
    """Ops that save their own output (softmax, exp) must not keep it alive through the hooks once the graph is
    dropped without a backward (bench measured so before training, and the leak inflated its peak memory)."""
    x = torch.randn(64, 64, requires_grad=True)
    refs = []

    def forward():
        y = torch.softmax(x * 2, -1)
        z = y.exp()
        refs.extend([weakref.ref(y), weakref.ref(z)])
        return z.sum()

    _, result = saved_bytes(forward)
    del result
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_backward_through_the_measured_graph_is_the_plain_one():
    linear = torch.nn.Linear(9, 9).double()
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    _net(x, linear).backward()
    plain = [t.grad.clone() for t in (x, linear.weight, linear.bias)]
    for t in (x, linear.weight, linear.bias):
        t.grad = None
    _, loss = saved_bytes(lambda: _net(x, linear), exclude=linear.parameters())
    loss.backward()
    for expected, t in zip(plain, (x, linear.weight, linear.bias)):
        assert torch.equal(t.grad, expected)
