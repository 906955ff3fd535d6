"""The independent reference for circuits: plain PyTorch hooks on the raw transformers module.

Written from the transformers source of each family without tracer: each sender's value
comes from hooks (a head's from its slice of the output projection's weight), and a
receiver's own input is made by hooks that rerun the attention's input norm and the
projection's weights on it.  Scores are the gradients of scalar leaves, one receiver at a
time; edge patching splits every receiver at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tracer.execute import frozen  # a utility only: no tracer code computes the reference


def _get(module, path):
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def spec(arch: str, cfg) -> dict:
    """Where each piece of the graph lives in ``arch`` (module paths per layer)."""
    H = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    kv = getattr(cfg, "num_key_value_heads", None) or H
    s = dict(H=H, hd=hd, kv=kv, parallel=False, post=False, conv1d=False)
    if arch in ("gpt2", "gpt_neo"):
        attn = "attn" if arch == "gpt2" else "attn.attention"
        s.update(layers="transformer.h", attn_norm="ln_1", mid="ln_2", mlp="mlp",
                 final="transformer.ln_f")
        if arch == "gpt2":
            E = H * hd
            s.update(o_proj="attn.c_proj", conv1d=True,
                     proj=lambda kind, h: ("attn.c_attn", "qkv".index(kind) * E + h * hd))
        else:
            s.update(o_proj=f"{attn}.out_proj", proj=lambda kind, h: (f"{attn}.{kind}_proj", h * hd))
        return s
    if arch == "gpt_neox":
        s.update(layers="gpt_neox.layers", attn_norm="input_layernorm", mid="post_attention_layernorm",
                 mlp="mlp", final="gpt_neox.final_layer_norm", o_proj="attention.dense",
                 parallel=bool(getattr(cfg, "use_parallel_residual", True)),
                 proj=lambda kind, h: ("attention.query_key_value", h * 3 * hd + "qkv".index(kind) * hd))
        return s
    s.update(layers="model.layers", attn_norm="input_layernorm", mid="post_attention_layernorm",
             mlp="mlp", final="model.norm", o_proj="self_attn.o_proj")
    if arch == "phi3":
        off = {"q": 0, "k": H * hd, "v": H * hd + kv * hd}
        s["proj"] = lambda kind, h: ("self_attn.qkv_proj", off[kind] + h * hd)
    else:
        s["proj"] = lambda kind, h: (f"self_attn.{kind}_proj", h * hd)
    if arch in ("gemma2", "gemma3", "olmo2"):  # the attention's and MLP's outputs normed before the add
        s.update(post=True, post_attn="post_attention_layernorm", mlp="post_feedforward_layernorm",
                 mid="pre_feedforward_layernorm")
    if arch == "olmo2":
        s.update(attn_norm=None, mid="mlp")
    return s


def names(s: dict, n_layers: int) -> tuple[list, list, dict, dict]:
    """Senders, receivers and when each acts (an edge: sender time < receiver time)."""
    g = "h" if s["kv"] == s["H"] else "g"
    senders, receivers, st, rt = ["input"], [], {"input": -1.0}, {}
    for layer in range(n_layers):
        for kind, n in (("q", s["H"]), ("k", s["kv"]), ("v", s["kv"])):
            for h in range(n):
                name = f"a{layer}.{'h' if kind == 'q' else g}{h}<{kind}>"
                receivers.append(name)
                rt[name] = layer
        heads = [f"a{layer}"] if s["post"] else [f"a{layer}.h{h}" for h in range(s["H"])]
        for name in heads:
            senders.append(name)
            st[name] = layer + 0.3
        receivers.append(f"m{layer}")
        rt[f"m{layer}"] = layer + (0.1 if s["parallel"] else 0.5)
        senders.append(f"m{layer}")
        st[f"m{layer}"] = layer + 0.7
    receivers.append("logits")
    rt["logits"] = float(n_layers)
    return senders, receivers, st, rt


def _first(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _replace_first(args, kwargs, value):
    if args:
        return (value,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


def _linear(mod, x):
    if type(mod).__name__ == "Conv1D":  # GPT-2: weight (in, out)
        return x @ mod.weight + mod.bias
    return F.linear(x, mod.weight, mod.bias)


def _head_value(s, mod, z, h):
    """Head h's part of the output projection applied to z (no bias)."""
    sl = slice(h * s["hd"], (h + 1) * s["hd"])
    if s["conv1d"]:
        return z[..., sl] @ mod.weight[sl, :]
    return z[..., sl] @ mod.weight[:, sl].T


class Hooks:
    """Hooks on a raw module that record senders' values and edit receivers' inputs."""

    def __init__(self, module, s):
        self.module, self.s, self.handles = module, s, []
        self.n_layers = module.config.num_hidden_layers

    def layer(self, i, path=""):
        return _get(self.module, f"{self.s['layers']}.{i}" + (f".{path}" if path else ""))

    def pre(self, mod, fn):
        self.handles.append(mod.register_forward_pre_hook(fn, with_kwargs=True))

    def post(self, mod, fn):
        self.handles.append(mod.register_forward_hook(fn))

    def remove(self):
        for h in self.handles:
            h.remove()


def run(module, s, ids, values, receiver_input=None, first_input=None):
    """One forward of ``ids``; every sender's value goes into ``values`` (name -> tensor).
    ``receiver_input(name, stream)`` -> a receiver's own input (None: the stream);
    ``first_input(x)`` -> the first layer's input.  Returns the logits."""
    hk = Hooks(module, s)
    H = s["H"]
    state = {}
    for i in range(hk.n_layers):
        def layer_pre(mod, args, kwargs, i=i):
            x = _first(args, kwargs)
            if i == 0 and first_input is not None:
                x = first_input(x)
            if i == 0:
                values["input"] = x
            state["x"] = x
            return _replace_first(args, kwargs, x) if i == 0 and first_input is not None else None
        hk.pre(hk.layer(i), layer_pre)
        attn_norm = hk.layer(i, s["attn_norm"]) if s["attn_norm"] else None
        by_module: dict = {}
        for kind, n in (("q", H), ("k", s["kv"]), ("v", s["kv"])):
            for h in range(n):
                path, offset = s["proj"](kind, h)
                g = "h" if kind == "q" or s["kv"] == H else "g"
                by_module.setdefault(path, []).append((f"a{i}.{g}{h}<{kind}>", offset))
        for path, heads in by_module.items():
            proj = hk.layer(i, path)

            def proj_post(mod, args, out, heads=heads):
                if receiver_input is None:
                    return None
                out = out.clone()
                for name, offset in heads:
                    own = receiver_input(name, state["x"])
                    if own is None:
                        continue
                    normed = attn_norm(own) if attn_norm is not None else own
                    out[..., offset:offset + s["hd"]] = _linear(mod, normed)[..., offset:offset + s["hd"]]
                return out
            hk.post(proj, proj_post)
        o_proj = hk.layer(i, s["o_proj"])
        if s["post"]:
            hk.post(hk.layer(i, s["post_attn"]), lambda m, a, out, i=i: values.__setitem__(f"a{i}", out))
        else:
            def o_pre(mod, args, kwargs, i=i):
                z = _first(args, kwargs)
                for h in range(H):
                    values[f"a{i}.h{h}"] = _head_value(s, mod, z, h)
            hk.pre(o_proj, o_pre)

        def mid_pre(mod, args, kwargs, i=i):
            own = receiver_input(f"m{i}", _first(args, kwargs)) if receiver_input else None
            return None if own is None else _replace_first(args, kwargs, own)
        hk.pre(hk.layer(i, s["mid"]), mid_pre)
        hk.post(hk.layer(i, s["mlp"]), lambda m, a, out, i=i: values.__setitem__(
            f"m{i}", out[0] if isinstance(out, tuple) else out))

    def final_pre(mod, args, kwargs):
        own = receiver_input("logits", _first(args, kwargs)) if receiver_input else None
        return None if own is None else _replace_first(args, kwargs, own)
    hk.pre(_get(module, s["final"]), final_pre)
    try:
        return module(ids).logits
    finally:
        hk.remove()


def logit_diff(logits, answers):
    lp = logits[:, -1].float().log_softmax(-1)
    return lp[:, answers[0]] - lp[:, answers[1]]


def scores(module, s, clean, corrupt, answers, steps=None):
    """(senders, receivers) scores of one pair by the leaf-per-receiver method: EAP, or
    EAP-IG with ``steps``."""
    n_layers = module.config.num_hidden_layers
    senders, receivers, st, rt = names(s, n_layers)
    with torch.no_grad():
        c_val, r_val = {}, {}
        run(module, s, clean, c_val)
        run(module, s, corrupt, r_val)
    diff = {u: r_val[u] - c_val[u] for u in senders}
    out = torch.zeros(len(senders), len(receivers), dtype=torch.float64)
    points = [None] if steps is None else [k / steps for k in range(1, steps + 1)]
    for j, v in enumerate(receivers):
        before = [u for u in senders if st[u] < rt[v]]
        for alpha in points:
            eps = torch.zeros(len(before), requires_grad=True)

            def own(name, x, v=v, before=before, eps=eps):
                if name != v:
                    return None
                return x + sum(eps[k] * diff[u] for k, u in enumerate(before))
            first = None
            if alpha is not None:
                first = lambda x, a=alpha: r_val["input"] + a * (c_val["input"] - r_val["input"])  # noqa: E731
            with torch.enable_grad(), frozen(module):  # the shared tiny models keep no .grad
                logit_diff(run(module, s, clean, {}, own, first), answers).sum().backward()
            for k, u in enumerate(before):
                out[senders.index(u), j] += eps.grad[k].double() / len(points)
    valid = torch.tensor([[st[u] < rt[v] for v in receivers] for u in senders])
    return out.masked_fill(~valid, float("nan")), senders, receivers


def patched(module, s, clean, corrupt, answers, excluded):
    """The logit difference with each (sender, receiver) in ``excluded`` seeing the
    corrupted run's sender value, every receiver's input split at once."""
    with torch.no_grad():
        r_val = {}
        run(module, s, corrupt, r_val)
        cur = {}
        into: dict = {}
        for u, v in excluded:
            into.setdefault(v, []).append(u)

        def own(name, x):
            if name not in into:
                return None
            return x + sum(r_val[u] - cur[u] for u in into[name])
        return logit_diff(run(module, s, clean, cur, own), answers)
