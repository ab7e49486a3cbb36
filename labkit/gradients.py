"""Gradient reference tools: is a model trained on the gradient its loss defines?

:func:`parameter_gradient_cosines` runs a model as it trains (float32, optionally channels_last)
and as a reference (a float64 copy, contiguous inputs, instance norm from elementary ops), puts
the same scalar loss through both and returns per parameter the cosine between the gradients:
1 to many digits after rounding, far below 1 where a kernel gets a gradient wrong (as torch
2.13's CPU instance norm does at batch 1 for a channels_last gradient,
:func:`instance_norm_gradient_bug`). ``tests/test_gradients.py`` checks every trainable model
with it; ``scripts/gradient_audit.py`` audits them as their chapters train them.
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import _describe, check_choice, check_number, check_positive_int, check_seed, check_tensor

_TORCH_INSTANCE_NORM = F.instance_norm   # the kernel itself, whatever patches it later
ZERO_REFERENCE = 1e-12   # a reference gradient this small beside the whole reference gradient is zero
ZERO_TESTED = 1e-4       # a float32 gradient this small beside the whole float32 gradient is zero (rounding)


def elementary_instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                             use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5):
    """``torch.nn.functional.instance_norm`` from mean, biased variance and sqrt (autograd does the rest).

    input (N, C, *) with at least one spatial dim; running_mean, running_var, weight, bias (C,) or None.
    With ``use_input_stats`` each sample's and channel's statistics over the spatial positions
    normalise it, and given running statistics are updated as torch does: by ``momentum`` towards
    the batch mean of the per-instance means and unbiased variances. Without it the running
    statistics (then required) normalise. y = (x − μ) / sqrt(σ² + eps) · weight + bias."""
    check_tensor(input, "input", shape="(N, C, *)", ndim=tuple(range(3, 9)), finite=False, non_empty=False)
    channels, spatial = input.shape[1], math.prod(input.shape[2:])
    for name, value in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                        ("bias", bias)):
        if value is not None and (not isinstance(value, torch.Tensor) or value.shape != (channels,)):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be None or a ({channels},) tensor, one value per channel, got {got}")
    check_number(momentum, "momentum")
    check_number(eps, "eps", minimum=0.0)
    dims, shape = tuple(range(2, input.dim())), (1, channels) + (1,) * (input.dim() - 2)
    if use_input_stats:
        if spatial < 2:
            raise ValueError(f"input must have more than one spatial element per channel to take statistics "
                             f"over, got {tuple(input.shape)}")
        mean = input.mean(dim=dims, keepdim=True)
        centred = input - mean
        variance = (centred * centred).mean(dim=dims, keepdim=True)
        with torch.no_grad():
            for running, batch in ((running_mean, mean), (running_var, variance * spatial / (spatial - 1))):
                if running is not None:
                    running.mul_(1 - momentum).add_(batch.mean(0).flatten().to(running.dtype), alpha=momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("use_input_stats=False normalises with running_mean and running_var: both must be "
                             "(C,) tensors, got None")
        mean, variance = running_mean.view(shape), running_var.view(shape)
        centred = input - mean
    out = centred / torch.sqrt(variance + eps)
    if weight is not None:
        out = out * weight.view(shape)
    return out + bias.view(shape) if bias is not None else out


@contextlib.contextmanager
def elementary_instance_norms():
    """Within the block, ``torch.nn.functional.instance_norm`` is :func:`elementary_instance_norm`
    (``nn.InstanceNorm2d`` and labkit's instance norms look it up there at call time); the kernel
    is restored on leaving, also on an error."""
    previous = torch.nn.functional.instance_norm
    torch.nn.functional.instance_norm = elementary_instance_norm
    try:
        yield
    finally:
        torch.nn.functional.instance_norm = previous


@contextlib.contextmanager
def _matched_dropout(seed: int, calls: list):
    """``F.dropout`` (so ``nn.Dropout``) with masks drawn in logical order from a generator seeded with
    ``seed``: the same masks in float32 and float64, in any layout. Each call is logged in ``calls``."""
    generator, previous = torch.Generator().manual_seed(seed), torch.nn.functional.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        calls.append((tuple(input.shape), float(p), bool(training)))
        if not training or p == 0:
            return input
        keep = (torch.rand(input.shape, generator=generator, dtype=torch.float64) >= p).to(input)
        scaled = keep / (1 - p) if p < 1 else keep
        return input.mul_(scaled) if inplace else input * scaled

    torch.nn.functional.dropout = dropout
    try:
        yield
    finally:
        torch.nn.functional.dropout = previous


def _map(value, convert):
    """``value`` (nested lists, tuples, dicts) with every tensor t replaced by convert(t)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, convert) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, convert) for k, v in value.items()}
    return convert(value) if isinstance(value, torch.Tensor) else value


def projection_loss(outputs, seed: int = 0) -> torch.Tensor:
    """Σ_t Σ (t ⊙ w_t) over every floating tensor t in ``outputs`` (nested lists, tuples, dicts) that
    requires grad, each w_t ~ N(0, 1) drawn in float64 from ``seed`` in logical order and stored in
    t's dtype and memory layout, so the gradient reaching t has t's layout, as a pixel loss's would."""
    generator, tensors = torch.Generator().manual_seed(check_seed(seed)), []
    _map(outputs, lambda t: tensors.append(t) if t.is_floating_point() and t.requires_grad else None)
    if not tensors:
        raise ValueError("outputs must hold at least one floating tensor that depends on the parameters")
    total = 0
    for t in tensors:
        weights = torch.empty_like(t).copy_(torch.randn(t.shape, generator=generator, dtype=torch.float64))
        total = total + (t * weights).sum()
    return total


def _gradients(net: nn.Module, args: tuple, loss_fn, seed: int, calls: list) -> dict:
    net.train()
    with torch.random.fork_rng(devices=[]), _matched_dropout(seed, calls):
        torch.manual_seed(seed)
        outputs = net(*args)
        loss = loss_fn(outputs) if loss_fn is not None else projection_loss(outputs, seed)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
        raise ValueError(f"loss_fn must return a scalar tensor that depends on the parameters, got {_describe(loss)}")
    named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss.sum(), [p for _, p in named], allow_unused=True)
    return {name: None if g is None else g.detach().double().flatten() for (name, _), g in zip(named, grads)}


def parameter_gradients(model: nn.Module, make_inputs, loss_fn=None, *, batch_size: int = 1,
                        channels_last: bool = False, seed: int = 0) -> tuple[dict, dict]:
    """(tested, reference): {parameter name: its gradient, flattened, in float64, or None} of two runs.

    ``make_inputs(batch_size, generator)`` (a seeded ``torch.Generator``), called once, returns the
    forward's positional arguments as a tuple or list (tensors, nested containers, strings …). The
    model is not changed: two deep copies are taken before any forward (spectral norm's power
    iteration and batch norm's statistics change in one); both run in train mode and backpropagate
    ``loss_fn(outputs)`` (a scalar; default :func:`projection_loss`):

    - tested: float32, floating inputs as given (memory layout kept), or with ``channels_last``
      the model and every 4-D floating input in channels_last;
    - reference: float64, contiguous float64 inputs, under :func:`elementary_instance_norms`.

    Randomness: ``torch.manual_seed(seed)`` before each forward (in a forked RNG: the caller's stream
    is untouched); dropout masks are drawn in logical order from ``seed``, the same for both runs
    whatever their dtype and layout (torch's own follow the memory layout), and a ``RuntimeError``
    says so if the runs called dropout differently. Pass a forward's other random draws as inputs.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    elif not callable(make_inputs):
        raise ValueError(f"make_inputs must be a callable (batch_size, generator) -> tuple of forward arguments, "
                         f"got {type(make_inputs).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise ValueError(f"loss_fn must be None or a callable outputs -> scalar tensor, got {type(loss_fn).__name__}")
    batch_size, seed = check_positive_int(batch_size, "batch_size"), check_seed(seed)
    check_choice(channels_last, "channels_last", (True, False))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model must have at least one parameter that requires grad")
    tested, reference = copy.deepcopy(model).float(), copy.deepcopy(model).double()
    inputs = make_inputs(batch_size, torch.Generator().manual_seed(seed))
    if not isinstance(inputs, (tuple, list)):
        raise ValueError(f"make_inputs must return a tuple or list of forward arguments, got {type(inputs).__name__}")

    def tested_input(t):
        if not t.is_floating_point():
            return t
        t = t.detach().float()   # the same tensor, layout kept, when it is float32 already
        return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

    if channels_last:
        tested = tested.to(memory_format=torch.channels_last)
    calls = ([], [])
    got = _gradients(tested, _map(tuple(inputs), tested_input), loss_fn, seed, calls[0])
    with elementary_instance_norms():
        want = _gradients(reference, _map(tuple(inputs), lambda t: t.detach().double().contiguous()
                                          if t.is_floating_point() else t), loss_fn, seed, calls[1])
    if calls[0] != calls[1]:
        raise RuntimeError(f"the float32 and float64 runs called dropout differently ({len(calls[0])} and "
                           f"{len(calls[1])} calls): their masks cannot match")
    return got, want


def gradient_cosines(tested: dict, reference: dict) -> dict[str, float]:
    """{name: cosine(tested[name], reference[name])} for the names with a gradient in either dict
    (both map the same names to tensors or None, as :func:`parameter_gradients` returns them; None
    counts as zero beside a gradient). Never NaN: a zero reference gradient (norm ≤ ``ZERO_REFERENCE``
    × the whole reference gradient's, e.g. a bias before a normalisation) gives 1.0 if the tested
    one is zero too (≤ ``ZERO_TESTED`` × the whole tested gradient's norm) and 0.0 if not; so does a
    zero tested gradient beside a reference one that is not."""
    if not isinstance(tested, dict) or not isinstance(reference, dict):
        raise ValueError(f"tested and reference must be dicts {{parameter name: gradient}}, got "
                         f"{type(tested).__name__} and {type(reference).__name__}")
    if set(tested) != set(reference):
        raise ValueError(f"tested and reference must name the same parameters; only one of them has "
                         f"{sorted(set(tested) ^ set(reference))}")
    pairs = {}
    for name in (n for n in reference if tested[n] is not None or reference[n] is not None):
        a, b = (None if g is None else g.detach().double().flatten() for g in (tested[name], reference[name]))
        pairs[name] = (torch.zeros_like(b) if a is None else a), (torch.zeros_like(a) if b is None else b)
    scale_a, scale_b = (math.sqrt(sum(float(pair[k].square().sum()) for pair in pairs.values())) for k in (0, 1))
    cosines = {}
    for name, (a, b) in pairs.items():
        norm_a, norm_b = float(a.norm()), float(b.norm())
        if norm_b <= ZERO_REFERENCE * scale_b:
            cosines[name] = 1.0 if norm_a <= ZERO_TESTED * scale_a else 0.0
        elif norm_a == 0.0:
            cosines[name] = 0.0
        else:
            cosines[name] = max(-1.0, min(1.0, float(torch.dot(a, b)) / (norm_a * norm_b)))
    return cosines


def parameter_gradient_cosines(model: nn.Module, make_inputs, loss_fn=None, *, batch_size: int = 1,
                               channels_last: bool = False, seed: int = 0) -> dict[str, float]:
    """{parameter name: cosine between its float32 gradient and its float64 reference gradient}:
    :func:`gradient_cosines` of :func:`parameter_gradients` (arguments as there). Parameters without
    a gradient in either run are left out; never NaN (see :func:`gradient_cosines`)."""
    return gradient_cosines(*parameter_gradients(model, make_inputs, loss_fn, batch_size=batch_size,
                                                 channels_last=channels_last, seed=seed))


def perturb_weights(model: nn.Module, seed: int = 1, scale: float = 0.1) -> nn.Module:
    """``model`` with every parameter moved off its initial value, in place: plus ``scale`` × its
    standard deviation (1 where it has none) of Gaussian noise, as a few training steps would.
    At initialisation zero weights (a zero-initialised head) block every gradient behind them, and
    an instance norm's weight 1 and bias 0 before another normalisation have an all but zero
    gradient (zero but for eps) that float32 gets only to a few digits. Returns the model."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    generator = torch.Generator().manual_seed(check_seed(seed))
    check_number(scale, "scale", minimum=0.0)
    with torch.no_grad():
        for p in model.parameters():
            spread = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 1.0
            p.add_(scale * spread * torch.randn(p.shape, generator=generator).to(p))
    return model


def instance_norm_gradient_bug(batch_size: int = 1, seed: int = 0) -> float:
    """Cosine between torch's own instance-norm input gradient for a channels_last-strided incoming
    gradient and for the same gradient made contiguous, x (batch_size, 8, 6, 10). 1.0 for a correct
    kernel; ≈ 0 on torch 2.13's CPU kernel at batch 1 (1.0 at batch 2). Calls the plain
    ``F.instance_norm`` kernel, not labkit's guarded instance norm."""
    batch_size, seed = check_positive_int(batch_size, "batch_size"), check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 8, 6, 10, generator=generator).requires_grad_()
    incoming = torch.randn(x.shape, generator=generator).contiguous(memory_format=torch.channels_last)
    strided, = torch.autograd.grad(_TORCH_INSTANCE_NORM(x), x, incoming)
    contiguous, = torch.autograd.grad(_TORCH_INSTANCE_NORM(x), x, incoming.contiguous())
    return float(F.cosine_similarity(strided.flatten().double(), contiguous.flatten().double(), dim=0))
