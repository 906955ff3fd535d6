"""Training and evaluating an ``IntervenableModel``'s interventions with the model frozen
(pyvene's ``train_alignment`` / ``eval_alignment``)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch

from ..sites import module


class Training:
    """The training half of ``IntervenableModel`` (it needs ``self.model``,
    ``self.interventions``, ``parameters()`` and ``__call__``)."""

    def disable_model_gradients(self) -> None:
        """Freeze the wrapped model (its parameters are not this module's)."""
        for p in module(self.model).parameters():
            p.requires_grad_(False)

    def count_parameters(self) -> int:
        """Trainable intervention parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def set_temperature(self, value: float) -> None:
        """Set the mask temperature of every Boundless DAS intervention."""
        for iv in self.interventions.values():
            if hasattr(iv, "set_temperature"):
                iv.set_temperature(value)

    def train_alignment(self, train_dataloader: Iterable, compute_loss: Callable,
                        compute_metrics: Optional[Callable] = None,
                        inputs_collator: Optional[Callable] = None, epochs: Optional[int] = None,
                        lr: float = 1e-3, temperature_schedule: Optional[tuple] = None,
                        progress: bool = True, log: Optional[list] = None,
                        optimizer: Any = None, scheduler: Any = None,
                        gradient_accumulation_steps: int = 1, **kwargs: Any) -> list[dict]:
        """Train the interventions (the model frozen) with Adam; returns the loss log.

        Batches (after ``inputs_collator``) come in either format:

        * Interlace's: ``base``, optional ``sources``, ``unit_locations``, ``subspaces`` and
          ``labels``; ``compute_loss(outputs, labels)`` gets the intervened outputs; 1 epoch
          at a constant ``lr`` unless told; ``temperature_schedule=(start, end)`` anneals the
          Boundless DAS temperature over all steps.
        * pyvene's: ``input_ids``, ``source_input_ids``, ``labels``, the unit locations as
          ``source_0->base.0.pos`` (source side) and ``source_0->base.1.pos`` (base side),
          one pair per intervention, and optional ``subspaces``.  This trains as pyvene 0.1.8's
          ``train_alignment`` does: ``compute_loss(logits, labels)``, 10 epochs unless told,
          Adam with a linear schedule warming up over the first 10% of steps, and the
          temperature lowered from 50 to 0.1 (in bfloat16, as pyvene) after each step.
        """
        from tqdm.auto import tqdm

        unknown = set(kwargs) - {"warm_up_steps"}  # pyvene's, which it ignores too
        if unknown:
            raise TypeError(f"train_alignment got unexpected keywords {sorted(unknown)}")
        self.disable_model_gradients()
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable interventions: use a RotatedSpace, LowRankRotatedSpace, "
                             "BoundlessRotatedSpace or Autoencoder intervention")
        batches = [inputs_collator(b) if inputs_collator else b for b in train_dataloader]
        if not batches:
            raise ValueError("train_alignment got no batches")
        pyvene = all("input_ids" in b for b in batches)
        if not pyvene and any("input_ids" in b for b in batches):
            raise ValueError("train_alignment got batches in both formats (pyvene's input_ids "
                             "and Interlace's base); give one")
        epochs = (10 if pyvene else 1) if epochs is None else epochs
        total = epochs * len(batches)
        optimizer = optimizer or torch.optim.Adam(params, lr=lr)
        if pyvene and scheduler is None:
            from transformers import get_linear_schedule_with_warmup

            scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0.1 * total,
                                                        num_training_steps=total)
            temperatures = torch.linspace(50.0, 0.1, total).to(torch.bfloat16)
        log = [] if log is None else log
        bar = tqdm(total=total, desc="train_alignment", disable=not progress)
        self.train()
        optimizer.zero_grad()
        step = 0
        for epoch in range(epochs):
            for batch in batches:
                if temperature_schedule is not None:
                    t0, t1 = temperature_schedule
                    self.set_temperature(t0 + (t1 - t0) * step / max(1, total - 1))
                out, labels = self._step_outputs(batch, pyvene)
                loss = compute_loss(out, labels)
                entry = {"epoch": epoch, "step": step, "loss": float(loss.detach())}
                if compute_metrics is not None:
                    with torch.no_grad():
                        metrics = compute_metrics([out], [labels])
                    entry.update(metrics if isinstance(metrics, dict) else {"metric": metrics})
                if gradient_accumulation_steps > 1:
                    loss = loss / gradient_accumulation_steps
                loss.backward()
                # pyvene's rule: step every gradient_accumulation_steps, never at step 0 when
                # accumulating
                if step % gradient_accumulation_steps == 0 and \
                        not (gradient_accumulation_steps > 1 and step == 0):
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    optimizer.zero_grad()
                    if pyvene and temperature_schedule is None:
                        self.set_temperature(float(temperatures[step]))
                log.append(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
                bar.update(1)
                step += 1
        bar.close()
        self.eval()
        return log

    def _step_outputs(self, batch: dict, pyvene: bool) -> tuple[Any, Any]:
        """The intervened output of one batch and its labels (logits for pyvene's format)."""
        if not pyvene:
            _, out = self(batch["base"], batch.get("sources"), batch.get("unit_locations"),
                          subspaces=batch.get("subspaces"), output_original_output=False)
            return out, batch["labels"]
        _, out = self({"input_ids": batch["input_ids"]}, [{"input_ids": batch["source_input_ids"]}],
                      self._pyvene_locations(batch), subspaces=_plain(batch.get("subspaces")),
                      output_original_output=False)
        return out.logits, batch["labels"]

    def _pyvene_locations(self, batch: dict) -> dict:
        """pyvene's ``source_k->base.{0,1}.{unit}`` batch fields as ``unit_locations``."""
        left, right = [], []
        for k, unit in enumerate(self._units):
            sides = []
            for side in (0, 1):
                names = [f"source_{k}->base.{side}.{u}" for u in unit["unit"].split(".")]
                missing = [n for n in names if n not in batch]
                if missing:
                    raise ValueError(f"a pyvene-format batch needs {missing} for intervention {k} "
                                     f"(fields: {sorted(batch)})")
                values = [_plain(batch[n]) for n in names]
                sides.append(values[0] if len(values) == 1 else values)
            left.append(sides[0])
            right.append(sides[1])
        return {"sources->base": (left, right)}

    def train(self, mode: Any = True, **kwargs: Any) -> Any:
        """``train(train_dataloader=..., compute_loss=..., compute_metrics=...,
        inputs_collator=...)`` trains the interventions (pyvene's README spelling of
        ``train_alignment``); ``train()`` / ``train(False)`` is ``nn.Module.train``."""
        if kwargs or not isinstance(mode, bool):
            if not isinstance(mode, bool):
                kwargs.setdefault("train_dataloader", mode)
            return self.train_alignment(**kwargs)
        return super().train(mode)

    def evaluate(self, train_dataloader: Any = None, compute_metrics: Optional[Callable] = None,
                 inputs_collator: Optional[Callable] = None, eval_dataloader: Any = None,
                 progress: bool = True) -> dict:
        """pyvene's README spelling of ``eval_alignment`` (it names the data
        ``train_dataloader``)."""
        data = eval_dataloader if eval_dataloader is not None else train_dataloader
        if data is None or compute_metrics is None:
            raise ValueError("evaluate needs train_dataloader= (or eval_dataloader=) and compute_metrics=")
        return self.eval_alignment(data, compute_metrics, inputs_collator, progress=progress)

    def eval_alignment(self, eval_dataloader: Iterable, compute_metrics: Callable,
                       inputs_collator: Optional[Callable] = None, progress: bool = True) -> Any:
        """``compute_metrics(outputs_list, labels_list)`` over every batch, without grad
        (interchange intervention accuracy for the usual metric, ``iia``).  Batches in
        pyvene's format are scored one by one and averaged by batch size, as pyvene does."""
        from tqdm.auto import tqdm

        outs, labels, scores, sizes = [], [], [], []
        with torch.no_grad():
            for batch in tqdm(list(eval_dataloader), desc="eval_alignment", disable=not progress):
                batch = inputs_collator(batch) if inputs_collator else batch
                pyvene = "input_ids" in batch
                out, y = self._step_outputs(batch, pyvene)
                if pyvene:
                    scores.append(compute_metrics([out], [y]))
                    sizes.append(int(batch["input_ids"].shape[0]))
                else:
                    outs.append(out)
                    labels.append(y)
        if outs and scores:
            raise ValueError("eval_alignment got batches in both formats")
        if not scores:
            return compute_metrics(outs, labels)
        if all(isinstance(v, dict) for v in scores):
            return {k: sum(v[k] * n for v, n in zip(scores, sizes)) / sum(sizes) for k in scores[0]}
        return sum(v * n for v, n in zip(scores, sizes)) / sum(sizes)


def _plain(value: Any) -> Any:
    """Tensors (a DataLoader's collated locations) as nested lists."""
    return value.tolist() if isinstance(value, torch.Tensor) else value
