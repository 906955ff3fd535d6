"""Interpretability methods as encode -> intervene -> decode at one layer (interp_interv).

Every method maps the residual stream ``x`` (after layer ``layer``) to features
``z = encode(x)`` and back, ``x_hat = decode(z)``:

* ``LogitLens``: ``z = W_U (g * x) / s`` (final-norm gain ``g``, ``s`` the stream's typical
  RMS at that layer), decoded with the pseudo-inverse; features are tokens.
* ``TunedLens``: the logit lens after an affine translator ``A x + b`` trained here (KL to
  the model's final distribution) on text the project ships; saved and reloaded.
* ``SAE``: a ReLU sparse autoencoder trained here on the layer's activations, or read from
  a SAELens-format folder (``cfg.json`` + ``sae_weights.safetensors``).
* ``Probe``: a logistic-regression direction for "the text mentions the phrase".
* ``SteeringVector``: the mean activation difference of texts with and without the phrase.

An intervention on feature ``f`` with strength ``alpha`` moves the stream along
``decode(e_f) - decode(0)`` (all decoders are affine, so this is the exact change of
``decode`` when ``z_f`` grows), normalized so that ``alpha = 1`` is a step as long as the
layer's median stream norm: methods whose native units differ by orders of magnitude are
then compared at the same strength.  ``bottleneck()`` replaces ``x`` by
``decode(encode(x))`` with no intervention (``--test-bottleneck``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from tracer import checks, execute
from tracer.files import InterventionSet, atomic, model_info
from tracer.interventions import Intervention
from tracer.metrics import fit_probe, mean_difference
from tracer.plan import Activations, Distribution, Group
from tracer.sites import dims_of, envoy, family_of, module

DATA = Path(__file__).parent / "data"


def training_texts() -> list[str]:
    """Text the project ships (statements, neutral sentences, prompts) for lenses and SAEs."""
    rows = json.loads((DATA / "true_false.json").read_text())
    texts = [r["true"] for r in rows] + [r["false"] for r in rows]
    texts += json.loads((DATA / "neutral.json").read_text())
    steering = json.loads((DATA / "steering.json").read_text())
    texts += steering["prompts"]
    texts += [t.format(o) for t in steering["templates"] for o in steering["others"][:6]]
    return texts


def activations(model: Any, texts: Sequence[str], layer: int, batch_size: int = 64,
                with_logits: bool = False, remote: Optional[bool] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The residual stream after ``layer`` at every token of ``texts``, ``(tokens, hidden)``;
    with ``with_logits`` the final next-token log-probs too (one plan)."""
    reads = [Activations(f"resid_post.{layer}", 0)] + ([Distribution(0)] if with_logits else [])
    groups = [Group([list(model.tokenizer(t)["input_ids"])], [], reads) for t in texts]
    results = execute.run(model, groups, max_batch=batch_size, remote=remote, progress=False)
    x = torch.cat([r[0] for r in results])
    return x, (torch.cat([r[1] for r in results]) if with_logits else None)


_NORMS: dict = {}


def stream_norm(model: Any, layer: int) -> float:
    """Median norm of the stream after ``layer`` over the shipped prompts (cached)."""
    key = (id(model), layer)
    if key not in _NORMS:
        texts = json.loads((DATA / "steering.json").read_text())["prompts"]
        x, _ = activations(model, texts, layer)
        _NORMS[key] = float(x.norm(dim=-1).median())
    return _NORMS[key]


def unembedding(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The unembedding matrix ``(vocab, hidden)`` and the final norm's effective gain
    ``(hidden,)`` (ones when the norm has no weight), in float32, from the family table.

    A remote model (on the meta device) reads both through one remote trace."""
    fam = family_of(model.config)
    weight = module(model).get_submodule(fam.lm_head).weight
    if weight.device.type == "meta":
        def go() -> tuple:
            with torch.no_grad(), model.trace("x", remote=True):
                w = envoy(model, fam.lm_head).weight.save()
                g = envoy(model, fam.final_norm).weight.save()
            return w, g
        weight, gain = execute.call(go)
    else:
        norm = module(model).get_submodule(fam.final_norm)
        gain = getattr(norm, "weight", None)
    weight = weight.detach().float().cpu()
    gain = torch.ones(weight.shape[1]) if gain is None else gain.detach().float().cpu() + fam.norm_offset
    return weight, gain


def final_norm(model: Any) -> torch.nn.Module:
    """The model's final norm module (local models), from the family table."""
    return module(model).get_submodule(family_of(model.config).final_norm)


class Method:
    """encode / decode at ``layer``; subclasses set ``self.layer``."""

    name = "method"
    layer: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} has no encoder")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} has no decoder")

    def feature(self, model: Any, phrase: str) -> int:
        """The feature index that stands for ``phrase``."""
        raise TypeError(f"{type(self).__name__} has no feature index")

    def direction(self, model: Any, phrase: str) -> torch.Tensor:
        """``decode(e_f) - decode(0)`` for the phrase's feature: the stream change per unit."""
        f = self.feature(model, phrase)
        z = torch.zeros(2, self.width)
        z[1, f] = 1.0
        out = self.decode(z)
        return out[1] - out[0]

    def steer(self, model: Any, phrase: str, alpha: float) -> Intervention:
        """Add ``alpha`` x (median stream norm) along the phrase's feature direction, at
        every position of the layer."""
        d = self.direction(model, phrase).float()
        vector = d / d.norm().clamp(min=1e-12) * stream_norm(model, self.layer)
        return Intervention("add", f"resid_post.{self.layer}", params={"vector": vector, "alpha": float(alpha)})

    def bottleneck(self) -> Intervention:
        """Replace the stream by ``decode(encode(x))`` (an affine map for the lenses)."""
        eye = torch.eye(self.hidden)
        bias = self.decode(self.encode(torch.zeros(1, self.hidden)))[0]
        matrix = self.decode(self.encode(eye)) - bias
        return Intervention("affine", f"resid_post.{self.layer}",
                            params={"matrix": matrix.float(), "bias": bias.float()})


class LogitLens(Method):
    """``z = W_U (g * (x @ A + b)) / scale``, decoded by the pseudo-inverse of that affine
    map.  The plain logit lens has ``A = I, b = 0``; ``TunedLens`` trains them."""

    name = "logit"

    def __init__(self, model: Any, layer: int, translator: Optional[dict] = None,
                 scale: Optional[float] = None):
        self.layer = layer
        self.w_u, self.gain = unembedding(model)
        self.hidden, self.width = self.w_u.shape[1], self.w_u.shape[0]
        # the stream's typical RMS, so z is on the scale of the final logits
        self.scale = scale if scale is not None else stream_norm(model, layer) / self.hidden ** 0.5
        self.a = translator["a"] if translator else torch.eye(self.hidden)
        self.b = translator["b"] if translator else torch.zeros(self.hidden)
        if self.a.shape != (self.hidden, self.hidden):
            raise ValueError(f"translator is {tuple(self.a.shape)}, the model is {self.hidden} wide")
        self._pinv = torch.linalg.pinv((self.w_u * self.gain) @ self.a.T)
        self._b_back = self.b @ torch.linalg.pinv(self.a)

    def encode(self, x):
        return ((x.float() @ self.a + self.b) * self.gain) @ self.w_u.T / self.scale

    def decode(self, z):
        # solves x @ A + b ~ scale * pinv(W_U g) z in the least-squares sense
        return self.scale * z.float() @ self._pinv.T - self._b_back

    def feature(self, model, phrase):
        return _first_token(model, phrase)


class TunedLens(LogitLens):
    """The logit lens after a trained affine translator ``x -> x @ A + b`` for this layer."""

    name = "tuned"

    @classmethod
    def train(cls, model: Any, layer: int, texts: Optional[Sequence[str]] = None, steps: int = 300,
              lr: float = 1e-3, progress: bool = False) -> "TunedLens":
        """Fit the translator so the lens's distribution matches the final one (KL)."""
        from tqdm.auto import tqdm

        if execute.is_remote(model):
            raise ValueError("the tuned lens trains through the model's final norm, which a remote "
                             "model does not hold: train it on a local copy (tracer.load(name)), "
                             "save it, and load it with TunedLens.load for remote use")
        x, target = activations(model, texts or training_texts(), layer, with_logits=True)
        w_u, _ = unembedding(model)
        hidden = x.shape[1]
        a = torch.nn.Parameter(torch.eye(hidden))
        b = torch.nn.Parameter(torch.zeros(hidden))
        opt = torch.optim.Adam([a, b], lr=lr)
        g = torch.Generator().manual_seed(0)
        for _ in tqdm(range(steps), desc=f"tuned lens layer {layer}", disable=not progress):
            idx = torch.randint(0, x.shape[0], (512,), generator=g)
            logp = torch.log_softmax(_final_logits(model, x[idx] @ a + b, w_u), -1)
            loss = torch.nn.functional.kl_div(logp, target[idx], log_target=True, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
        return cls(model, layer, {"a": a.detach(), "b": b.detach()})

    def save(self, folder: Union[str, Path], model: Any = None) -> Path:
        """The translator as an ``affine`` intervention at ``resid_post.layer`` in the one
        folder format (``tracer.files``); the lens scale rides in its meta."""
        iv = Intervention("affine", f"resid_post.{self.layer}",
                          params={"matrix": self.a.contiguous(), "bias": self.b.contiguous()})
        info = model_info(model) if model is not None else {"hidden_size": self.hidden}
        return InterventionSet([iv], info, {"lens": "tuned", "layer": self.layer,
                                            "scale": self.scale}).save(folder)

    @classmethod
    def load(cls, folder: Union[str, Path], model: Any) -> "TunedLens":
        """A tuned lens folder (this version's, or the previous ``tuned_lens.json`` layout)."""
        folder = Path(folder)
        if (folder / "tuned_lens.json").is_file():  # written before the one folder format
            from safetensors.torch import load_file

            meta = json.loads((folder / "tuned_lens.json").read_text())
            if meta.get("format") != "interlace.tuned_lens":
                raise ValueError(f"{folder} is not an Interlace tuned lens")
            tensors, layer, scale = load_file(str(folder / "tuned_lens.safetensors")), meta["layer"], meta["scale"]
        else:
            spec = InterventionSet.load(folder, model)
            if spec.meta.get("lens") != "tuned" or len(spec.interventions) != 1:
                raise ValueError(f"{folder} is not an Interlace tuned lens (its meta names no lens)")
            params = spec.interventions[0].params
            tensors = {"a": params["matrix"], "b": params["bias"]}
            layer, scale = spec.meta["layer"], spec.meta["scale"]
        try:
            return cls(model, layer, tensors, scale)
        except ValueError as error:
            raise ValueError(f"{folder}: {error}") from None


def _final_logits(model: Any, h: torch.Tensor, w_u: torch.Tensor) -> torch.Tensor:
    """Logits of a stream vector through the real final norm and unembedding."""
    return final_norm(model)(h) @ w_u.T


class SAE(Method):
    """A ReLU sparse autoencoder at ``layer`` (SAELens parameter names)."""

    name = "sae"

    def __init__(self, layer: int, w_enc: torch.Tensor, b_enc: torch.Tensor, w_dec: torch.Tensor,
                 b_dec: torch.Tensor):
        self.layer = layer
        self.w_enc, self.b_enc, self.w_dec, self.b_dec = (t.detach().float() for t in (w_enc, b_enc, w_dec, b_dec))
        self.hidden, self.width = self.w_enc.shape

    def encode(self, x):
        return torch.relu((x.float() - self.b_dec) @ self.w_enc + self.b_enc)

    def decode(self, z):
        return z.float() @ self.w_dec + self.b_dec

    def feature(self, model, phrase):
        x, _ = activations(model, [phrase, f"I went to {phrase}."], self.layer)
        return int(self.encode(x).mean(0).argmax())

    def bottleneck(self) -> Intervention:
        return Intervention("sae", f"resid_post.{self.layer}",
                            params={"w_enc": self.w_enc, "b_enc": self.b_enc, "w_dec": self.w_dec, "b_dec": self.b_dec})

    @classmethod
    def train(cls, model: Any, layer: int, width: int = 1024, texts: Optional[Sequence[str]] = None,
              steps: int = 600, l1: float = 3e-3, lr: float = 1e-3, progress: bool = False) -> "SAE":
        """Train on the layer's activations over the shipped text."""
        from tqdm.auto import tqdm

        x, _ = activations(model, texts or training_texts(), layer)
        x = x[x.norm(dim=-1) < 3 * x.norm(dim=-1).median()]  # drop the first-token outliers
        torch.manual_seed(0)
        hidden = x.shape[1]
        w_dec = torch.nn.Parameter(torch.randn(width, hidden) / hidden ** 0.5)
        w_enc = torch.nn.Parameter(w_dec.detach().T.clone())
        b_enc = torch.nn.Parameter(torch.zeros(width))
        b_dec = torch.nn.Parameter(x.mean(0).clone())
        opt = torch.optim.Adam([w_enc, b_enc, w_dec, b_dec], lr=lr)
        scale = x.norm(dim=-1).mean()
        for _ in tqdm(range(steps), desc=f"SAE layer {layer}", disable=not progress):
            batch = x[torch.randint(0, x.shape[0], (1024,))]
            z = torch.relu((batch - b_dec) @ w_enc + b_enc)
            rec = z @ w_dec + b_dec
            loss = (rec - batch).pow(2).sum(-1).mean() / scale ** 2 + l1 * (z * w_dec.norm(dim=-1)).sum(-1).mean() / scale
            opt.zero_grad()
            loss.backward()
            opt.step()
        return cls(layer, w_enc, b_enc, w_dec, b_dec)

    def save(self, folder: Union[str, Path]) -> Path:
        """SAELens layout: ``cfg.json`` + ``sae_weights.safetensors``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic(folder / "sae_weights.safetensors") as tmp:
            save_file({"W_enc": self.w_enc.contiguous(), "b_enc": self.b_enc.contiguous(),
                       "W_dec": self.w_dec.contiguous(), "b_dec": self.b_dec.contiguous()}, str(tmp))
        with atomic(folder / "cfg.json") as tmp:
            tmp.write_text(json.dumps({"d_in": self.hidden, "d_sae": self.width,
                                                     "hook_name": f"blocks.{self.layer}.hook_resid_post",
                                                     "hook_layer": self.layer, "architecture": "standard"}))
        return folder

    @classmethod
    def load(cls, folder: Union[str, Path], layer: Optional[int] = None) -> "SAE":
        """A SAELens-format folder (standard ReLU architecture); safetensors only."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            cfg = json.loads((folder / "cfg.json").read_text())
            w = load_file(str(folder / "sae_weights.safetensors"))
        except (OSError, json.JSONDecodeError, ValueError, SafetensorError) as error:
            raise ValueError(f"{folder} is not a SAELens folder (cfg.json + sae_weights.safetensors), "
                             f"or its files are cut short or corrupt: {error}") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{folder}/cfg.json is not a JSON object")
        if cfg.get("architecture", "standard") != "standard":
            raise ValueError(f"{folder}: only the standard ReLU SAE architecture is supported, not {cfg['architecture']!r}")
        missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(w)
        if missing:
            raise ValueError(f"{folder}/sae_weights.safetensors lacks {sorted(missing)}")
        layer = layer if layer is not None else cfg.get("hook_layer")
        if layer is None:
            raise ValueError(f"{folder}/cfg.json names no hook_layer; pass layer=")
        enc, dec = w["W_enc"], w["W_dec"]
        if enc.dim() != 2 or dec.shape != enc.shape[::-1] or w["b_enc"].shape != enc.shape[1:] \
                or w["b_dec"].shape != enc.shape[:1]:
            raise ValueError(f"{folder}/sae_weights.safetensors: the shapes do not make one SAE "
                             f"(W_enc {tuple(enc.shape)}, b_enc {tuple(w['b_enc'].shape)}, W_dec "
                             f"{tuple(dec.shape)}, b_dec {tuple(w['b_dec'].shape)}); want (d_in, "
                             f"d_sae), (d_sae,), (d_sae, d_in), (d_in,)")
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            checks.finite(f"{folder}/sae_weights.safetensors: {name}", w[name].float())
        return cls(int(layer), w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])


def contrast_texts(phrase: str) -> tuple[list[str], list[str]]:
    """Sentences naming ``phrase`` and the same sentences naming other places (balanced)."""
    data = json.loads((DATA / "steering.json").read_text())
    others = data["others"]
    pos = [t.format(phrase) for t in data["templates"]]
    neg = [t.format(others[i % len(others)]) for i, t in enumerate(data["templates"])]
    neg += [t.format(others[(i + 7) % len(others)]) for i, t in enumerate(data["templates"])]
    return pos, neg


def mean_last(model: Any, texts: Sequence[str], layer: int) -> torch.Tensor:
    """The stream after ``layer`` at each text's last token, ``(texts, hidden)``."""
    groups = [Group([list(model.tokenizer(t)["input_ids"])], [],
                    [Activations(f"resid_post.{layer}", 0, (-1,))]) for t in texts]
    return torch.cat([r[0] for r in execute.run(model, groups, progress=False)])


class SteeringVector(Method):
    """Mean difference (CAA / ActAdd style) of texts with and without the phrase."""

    name = "steering"

    def __init__(self, layer: int, vector: torch.Tensor):
        self.layer, self.vector = layer, vector.float()
        self.hidden = self.width = vector.shape[0]

    @classmethod
    def fit(cls, model: Any, phrase: str, layer: int, positive: Optional[Sequence[str]] = None,
            negative: Optional[Sequence[str]] = None) -> "SteeringVector":
        pos, neg = contrast_texts(phrase)
        pos, neg = positive or pos, negative or neg
        x = mean_last(model, pos + neg, layer)
        return cls(layer, mean_difference(x[:len(pos)], x[len(pos):]))

    def direction(self, model, phrase):
        return self.vector

    def save(self, folder: Union[str, Path], model: Any) -> Path:
        """The vector as an ``add`` at ``resid_post.layer`` (the one folder format)."""
        iv = Intervention("add", f"resid_post.{self.layer}", params={"vector": self.vector})
        return InterventionSet([iv], model_info(model), {"method": self.name, "layer": self.layer}).save(folder)

    def bottleneck(self):
        raise ValueError("a steering vector has no encoder/decoder, so no bottleneck")


class Probe(Method):
    """A logistic-regression probe for "mentions the phrase"; its weight vector (in the raw
    stream's coordinates) is the intervention direction."""

    name = "probing"

    def __init__(self, layer: int, weight: torch.Tensor, bias: float):
        self.layer, self.weight, self.bias = layer, weight.float(), float(bias)
        self.hidden = self.width = weight.shape[0]

    @classmethod
    def fit(cls, model: Any, phrase: str, layer: int, steps: int = 300, seed: int = 0) -> tuple["Probe", float]:
        """Train on 70% of the contrast texts; returns the probe and its held-out balanced
        accuracy (chance = 0.5)."""
        pos, neg = contrast_texts(phrase)
        x = mean_last(model, pos + neg, layer)
        y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        cut = int(0.7 * len(y))
        train, test = idx[:cut], idx[cut:]
        # balanced classes; L2 of 1e-3 |w|^2 on the mean loss
        probe = fit_probe(x[train], y[train], steps=steps, l2=1e-3 * len(train), balanced=True, seed=seed)
        acc = float(probe.accuracy(x[test], y[test], balanced=True))
        return cls(layer, probe.direction(), float(probe.b)), acc

    def direction(self, model, phrase):
        return self.weight

    def save(self, folder: Union[str, Path], model: Any, meta: Optional[dict] = None) -> Path:
        """The probe's weight as an ``add`` direction at ``resid_post.layer``; bias in meta."""
        iv = Intervention("add", f"resid_post.{self.layer}", params={"vector": self.weight})
        return InterventionSet([iv], model_info(model), {"method": self.name, "layer": self.layer,
                                                        "bias": self.bias, **(meta or {})}).save(folder)

    def bottleneck(self):
        raise ValueError("a probe has no decoder, so no bottleneck")


def load_method(folder: Union[str, Path], model: Any, layer: Optional[int] = None) -> Method:
    """A saved method: a tuned lens, a steering vector or probe (Interlace folders), or an
    SAE (SAELens folder).  Safetensors and JSON only."""
    folder = Path(folder)
    if (folder / "sae_weights.safetensors").is_file():
        sae = SAE.load(folder, layer)
        hidden = dims_of(model.config).hidden
        if sae.hidden != hidden:
            raise ValueError(f"{folder}: the SAE reads {sae.hidden}-wide activations, but the model's "
                             f"residual stream is {hidden} wide")
        return sae
    if (folder / "tuned_lens.json").is_file():
        return TunedLens.load(folder, model)
    spec = InterventionSet.load(folder, model)
    kind = spec.meta.get("method") or spec.meta.get("lens")
    if kind == "tuned":
        return TunedLens.load(folder, model)
    vector = spec.interventions[0].params["vector"] if spec.interventions else None
    if kind == "steering" and vector is not None:
        return SteeringVector(spec.meta["layer"], vector)
    if kind == "probing" and vector is not None:
        return Probe(spec.meta["layer"], vector, spec.meta.get("bias", 0.0))
    raise ValueError(f"{folder} holds no saved method (a tuned lens, steering vector, probe or "
                     f"SAELens SAE); its meta names {kind!r}")


def _first_token(model: Any, phrase: str) -> int:
    ids = model.tokenizer(" " + phrase.strip())["input_ids"]
    if not ids:
        raise ValueError(f"phrase {phrase!r} has no tokens")
    return ids[0]
