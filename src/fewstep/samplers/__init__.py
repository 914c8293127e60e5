"""Samplers: pure functions with one contract (also in docs/concepts.md, "Sampler").

Every sampler entry point (``sample``, ``sample_student``, ``sample_imm``, ``sample_masked``, ``sample_uniform``,
``sample_discrete``) is

    fn(denoiser, [process,] shape, *, grid, generator, device="cpu", cond=None, **method_options)

- ``denoiser`` (first, positional): the network seen through its x0-predicting wrapper (``GaussianDenoiser``,
  an exact oracle, a k-step student G(z, t)), an IMM map f_{s,t}, or a categorical denoiser (log p(x0 | z_t)).
- ``process`` (second, positional): passed only to the Gaussian samplers that need it (``sample``,
  ``sample_student``). An IMM map carries its schedule and sigma_d, a categorical denoiser its process
  (``denoiser.process``).
- ``shape``: the full output shape including the batch dimension, ``(n, *sample_shape)``; for tokens
  ``(n, length)``.
- ``grid`` (keyword-only, required): an explicit, strictly decreasing float64 time grid [K + 1] from t_0 <= 1
  down to 0, or to the sampler's end time (IMM's t_min; a categorical grid may stop at t_K > 0). A sampler
  takes no step count: the caller builds the grid (``uniform_grid(k)``, ``student_grid(k)``, ``edm_grid``,
  ``logsnr_grid``, ``samplers.imm.imm_grid``).
- ``generator`` (keyword-only, required): the ``torch.Generator`` that makes every random draw; the global
  RNG is never read. Draws are made on the generator's device and moved (``fewstep.rng``).
- ``device`` (keyword-only, default ``"cpu"``): where the state lives.
- ``cond`` (keyword-only, default None): labels [n] of a class-conditional denoiser. The categorical samplers
  are unconditional and accept only None.
- method options (keyword-only): ``sampler`` of ``sample`` (required: ancestral, ddim, euler, heun);
  ``eta``, ``renoise_mode`` of ``sample_student``; ``sampler``, ``guidance``, ``null_label`` of ``sample_imm``;
  ``final``, ``batch_size``, ``dtype_categorical``, ``allow_low_precision`` of the categorical samplers (plus
  ``cache`` / ``force_cache`` for masked, ``kernel`` for uniform, ``temperature`` for ``sample_discrete``).

Dtype rule: the sampler state and every random draw are float64. Gaussian and IMM state and all their
coefficients are float64; the network is called in its own input dtype (``denoiser.input_dtype``, default
float32) and its output is cast back to float64. Categorical kernels are built and drawn in float64
(``dtype_categorical``); a lower precision needs the explicit opt-out ``allow_low_precision=True``.
Continuous samplers return a float64 tensor [shape]. The categorical samplers return ``(tokens, stats)``:
int64 tokens [n, length] (on the CPU) and a dict of stats counting the network evaluations (``steps``,
``steps_with_call``, ``row_evals``, ``nfe`` = evaluations per sample, ...).

Step functions take a state instead of a shape: ``ancestral``, ``ddim``, ``euler``, ``heun`` and the student's
``multistep`` are ``fn(denoiser, process, z, grid, *, generator, cond=None, **options)`` with z [n, ...] the
state at grid[0] and ``grid`` positional-or-keyword in all of them (the deterministic ones accept
``generator=None``). Same inputs, same output on the same device; there is no sampler object with hidden state.
"""

from fewstep.samplers.discrete import sample_discrete, sample_masked, sample_token_student, sample_uniform
from fewstep.samplers.gaussian import SAMPLERS, ancestral, ddim, euler, heun, nfe, sample
from fewstep.samplers.grids import edm_grid, logsnr_grid, make_grid, uniform_grid
from fewstep.samplers.imm import imm_grid, sample_imm
from fewstep.samplers.student import multistep, renoise, sample_student, student_grid

__all__ = ["SAMPLERS", "ancestral", "ddim", "edm_grid", "euler", "heun", "imm_grid", "logsnr_grid", "make_grid",
           "multistep", "nfe", "renoise", "sample", "sample_discrete", "sample_imm", "sample_masked",
           "sample_student", "sample_token_student", "sample_uniform", "student_grid", "uniform_grid"]
