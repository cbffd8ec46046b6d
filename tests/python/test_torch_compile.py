"""torch.compile: a small model using every op gives eager's loss and gradients."""
import pytest

torch = pytest.importorskip("torch")
import conftest as C
import unswag.torch as ut


class Small(torch.nn.Module):
    def __init__(self, mode):
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Linear(16, 32)
        self.g, self.u = torch.nn.Linear(32, 48), torch.nn.Linear(32, 48)
        self.d = torch.nn.Linear(48, 32)
        self.out = torch.nn.Linear(32, 4)
        self.act = ut.GELU(bits=2)
        self.mode = mode

    def forward(self, x):
        h = self.act(self.inp(x))
        h = ut.relu(h) + ut.silu(h, bits=4) + ut.leaky_relu(h, 0.1)
        h = h + ut.gated_mlp(h, self.g, self.u, self.d, mode=self.mode, tile_tokens=5)
        return self.out(h).square().mean()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_compile_matches_eager(mode, backend):
    x = torch.randn(3, 7, 16)
    eager, comp = Small(mode), Small(mode)
    l0, g0 = C.run_step(eager, lambda m: m(x))
    cm = torch.compile(comp, backend=backend, fullgraph=True)
    l1, g1 = C.run_step(cm, lambda m: m(x))
    assert torch.allclose(l0, l1, rtol=1e-5, atol=0)
    for k in g0:
        kk = k if k in g1 else f"_orig_mod.{k}"
        assert C.rel_err(g1[kk], g0[k]) <= 1e-5, k
