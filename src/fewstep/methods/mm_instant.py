"""Parameter-space helpers of instant Moment Matching (docs/methods/mm.md).

Instant MM drives the frozen teacher's loss gradient on generated data to its value on real data:
m(eta) = grad_theta [E_gen w ||T_theta(z_s) - x~||^2 - E_data w ||T_theta(z_s) - x||^2] (the data term is zero
only for a perfect teacher) and J = 1/2 ||m||^2_Lambda, estimated without bias from two independent batches as
J = 1/2 <g_A, Lambda g_B>. Per step the student minimises
(1/B) sum_i w_i <x~_{B,i}, sg delta_i> with delta = J_theta T_theta(z_s^B) nu and nu = -c Lambda g_A.

Here: the teacher as a function of its parameters (``TeacherFn``), the parameter-only gradient g_A
(``teacher_grad``), the JVP delta by three routes (``teacher_jvp``) and the diagonal preconditioner Lambda
(``Preconditioner``). Parameters are passed as name -> tensor dicts; the teacher module itself is never
modified and its ``.grad`` stays None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

Params = dict[str, Tensor]
JVPRoute = Literal["forward", "double_backward", "finite_difference"]
JVP_ROUTES = ("forward", "double_backward", "finite_difference")
PrecondKind = Literal["ema", "identity", "fixed"]
PRECONDS = ("ema", "identity", "fixed")


class TeacherFn:
    """T_theta(z, s, cond) as a function of a parameter dict, optionally classifier-free guided.

    Args:
        teacher: a parametric denoiser module T(z, t, cond=...).
        guidance: CFG scale w (None: no guidance); T_w = T(unc) + w (T(c) - T(unc)).
        null_label: the unconditional label index (``num_classes``).
    """

    def __init__(self, teacher: nn.Module, *, guidance: float | None = None, null_label: int | None = None) -> None:
        self.teacher, self.guidance, self.null_label = teacher, guidance, null_label
        self.params: Params = {k: v.detach() for k, v in teacher.named_parameters()}
        self.buffers: Params = {k: v.detach() for k, v in teacher.named_buffers()}
        if not self.params:
            raise ValueError("instant MM needs a parametric teacher (an oracle has no parameters): regress a "
                             "net on it first (fewstep.methods.mm.regress_on_teacher)")
        self.dtype = next(iter(self.params.values())).dtype

    def __call__(self, params: Mapping[str, Tensor], z: Tensor, s: Tensor, cond: Tensor | None = None) -> Tensor:
        """Teacher output [B, ...] at ``params`` (z, s cast to the teacher dtype)."""
        def call(zz: Tensor, ss: Tensor, cc: Tensor | None) -> Tensor:
            kw = {} if cc is None else {"cond": cc}
            return functional_call(self.teacher, ({**params, **self.buffers}), (zz, ss), kw)

        return guided(call, z.to(self.dtype), s.to(self.dtype), cond, self.guidance, self.null_label)


def guided(call: Callable[[Tensor, Tensor, Tensor | None], Tensor], z: Tensor, s: Tensor, cond: Tensor | None,
           guidance: float | None, null_label: int | None) -> Tensor:
    """T_w = T(z, s, null) + w (T(z, s, c) - T(z, s, null)) in one doubled batch; plain T without guidance."""
    if guidance is None or cond is None:
        return call(z, s, cond)
    if null_label is None:
        raise ValueError("classifier-free guidance needs the unconditional label (num_classes)")
    n = z.shape[0]
    both = call(torch.cat([z, z]), torch.cat([s, s]), torch.cat([cond, torch.full_like(cond, null_label)]))
    c, u = both[:n], both[n:]
    return u + guidance * (c - u)


def _sqnorm(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).pow(2).sum(1)


def teacher_grad(fn: TeacherFn, z_s: Tensor, s: Tensor, x_tilde: Tensor, w: Tensor, cond: Tensor | None = None, *,
                 create_graph: bool = False) -> Params:
    """g = grad_theta (1/B) sum_i w_i ||T_theta(z_s,i) - x~_i||^2, a parameter-only gradient.

    ``x_tilde`` keeps its graph when ``create_graph`` (the self-check's reference J); otherwise it is used as a
    constant. Returns a dict shaped like the teacher's parameters (zeros for unused ones).
    """
    params = {k: v.detach().requires_grad_(True) for k, v in fn.params.items()}
    out = fn(params, z_s, s, cond)
    x = x_tilde.to(out.dtype) if create_graph else x_tilde.detach().to(out.dtype)
    loss = (w.to(out.dtype) * _sqnorm(out - x)).mean()
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}


def teacher_jvp(fn: TeacherFn, z: Tensor, s: Tensor, nu: Mapping[str, Tensor], cond: Tensor | None = None, *,
                route: JVPRoute = "forward", fd_scale: float = 1e-3) -> Tensor:
    """delta = J_theta T_theta(z, s) nu, [B, ...], detached.

    Routes: ``forward`` (``torch.func.jvp`` over ``functional_call``; buffers constant), ``double_backward``
    (grad of J^T u with respect to a dummy u), ``finite_difference`` ((T(theta + h nu) - T(theta - h nu)) / 2h,
    h = fd_scale / rms(nu), in the teacher's dtype: only ~1e-4 relative in float32).
    """
    if route not in JVP_ROUTES:
        raise ValueError(f"unknown JVP route {route!r}; choose one of {JVP_ROUTES}")
    params = fn.params
    tangent = {k: nu[k].to(p.dtype) for k, p in params.items()}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if route == "forward":
        with sdpa_kernel([SDPBackend.MATH]):  # fused attention kernels (e.g. diffusers' SDPA) have no forward AD
            _, out = jvp(lambda p: fn(p, z, s, cond), (params,), (tangent,))
        return out.detach()
    if route == "double_backward":
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):  # nor a double backward
            p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            y = fn(p, z, s, cond)
            u = torch.zeros_like(y, requires_grad=True)
            g = torch.autograd.grad(y, list(p.values()), u, create_graph=True, allow_unused=True)
            used = [(gi, tangent[k]) for k, gi in zip(p, g) if gi is not None]
            out = torch.autograd.grad([gi for gi, _ in used], u, [ti for _, ti in used])[0]
        return out.detach()
    count = sum(v.numel() for v in tangent.values())
    rms = float(sqnorm(tangent)) ** 0.5 / max(count, 1) ** 0.5  # one host sync
    if rms == 0.0:
        return torch.zeros_like(fn(params, z, s, cond)).detach()
    h = fd_scale / rms
    with torch.no_grad():
        plus = fn({k: v + h * tangent[k] for k, v in params.items()}, z, s, cond)
        minus = fn({k: v - h * tangent[k] for k, v in params.items()}, z, s, cond)
    return (plus - minus) / (2 * h)


class Preconditioner:
    """Diagonal Lambda for nu = -c Lambda g_A.

    Kinds: ``identity``; ``fixed`` with a given second moment v (e.g. a saved teacher Adam ``exp_avg_sq``),
    Lambda = 1/(sqrt(v) + eps); ``ema`` (default): v <- beta v + (1 - beta) g_A^2, bias-corrected,
    Lambda = 1/(sqrt(v_hat) + eps). Instant MM applies Lambda *before* folding in the current g_A, so that
    Lambda is independent of the g_A it multiplies (E[Lambda g_A] = Lambda E[g_A]; with Adam's order the first
    step would be Lambda g = sign(g)); ``ready`` tells whether it has seen a gradient yet. The EMA state lives
    here (not in any network); ``MomentMatching.method_state`` puts it into every checkpoint.
    """

    def __init__(self, kind: PrecondKind = "ema", *, beta: float = 0.999, eps: float = 1e-8,
                 v: Mapping[str, Tensor] | None = None) -> None:
        if kind not in PRECONDS:
            raise ValueError(f"unknown preconditioner {kind!r}; choose one of {PRECONDS}")
        if kind == "fixed" and v is None:
            raise ValueError("the fixed preconditioner needs a second-moment dict v")
        self.kind, self.beta, self.eps = kind, float(beta), float(eps)
        self.v: Params = {} if v is None else {k: t.detach().clone() for k, t in v.items()}
        self.count = 0

    def ready(self) -> bool:
        """Whether ``apply`` can be called (an ``ema`` preconditioner needs one update first)."""
        return self.kind != "ema" or self.count > 0

    def update(self, g: Mapping[str, Tensor]) -> None:
        """Fold g^2 into the EMA (``ema`` only)."""
        if self.kind != "ema":
            return
        self.count += 1
        keys = list(g)
        gs = [g[k].detach() for k in keys]
        sq = torch._foreach_mul(gs, gs)  # g * g == g ** 2 bit for bit; the same operations as a per-tensor loop
        torch._foreach_mul_(sq, 1 - self.beta)
        prev = [self.v[k] if k in self.v else torch.zeros_like(gk) for k, gk in zip(keys, gs)]
        new = torch._foreach_mul(prev, self.beta)
        torch._foreach_add_(new, sq)
        self.v.update(zip(keys, new))

    def apply(self, g: Mapping[str, Tensor]) -> Params:
        """Lambda g (no state change; differentiable in g, Lambda itself is constant)."""
        if self.kind == "identity":
            return dict(g)
        if self.kind == "ema" and self.count == 0:
            raise RuntimeError("the EMA preconditioner needs at least one update before use")
        corr = 1.0 - self.beta**self.count if self.kind == "ema" else 1.0
        keys = list(g)
        den = torch._foreach_div([self.v[k].to(g[k]) for k in keys], corr)
        torch._foreach_sqrt_(den)
        torch._foreach_add_(den, self.eps)
        return dict(zip(keys, torch._foreach_div([g[k] for k in keys], den)))

    def state_dict(self) -> dict:
        return {"v": dict(self.v), "count": self.count}

    def load_state_dict(self, state: Mapping) -> None:
        self.v = {k: t.detach().clone() for k, t in state["v"].items()}
        self.count = int(state["count"])


def sqnorm(a: Mapping[str, Tensor]) -> Tensor:
    """sum over every tensor of ||a_k||^2 as a float64 0-d tensor (per-tensor norms in one foreach call, no host
    sync)."""
    vals = list(a.values())
    if not vals:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(torch._foreach_norm(vals)).double().pow(2).sum()


def combine(a: Mapping[str, Tensor], b: Mapping[str, Tensor], scale: float = 1.0) -> Params:
    """{k: a_k - scale * b_k} over a's keys in foreach calls (scale = 1: the plain difference, bit for bit)."""
    keys = list(a)
    bs = [b[k] for k in keys]
    return dict(zip(keys, torch._foreach_sub([a[k] for k in keys], bs if scale == 1.0 else
                                             torch._foreach_mul(bs, scale))))


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """<a, b> summed over every parameter tensor."""
    return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]
