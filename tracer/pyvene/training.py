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
                        inputs_collator: Optional[Callable] = None, epochs: int = 1,
                        lr: float = 1e-3, temperature_schedule: Optional[tuple] = None,
                        progress: bool = True, log: Optional[list] = None) -> list[dict]:
        """Train the interventions (the model frozen) with Adam; returns the loss log.

        Each batch (after ``inputs_collator``) is a dict with ``base``, optional ``sources``,
        ``unit_locations``, ``subspaces`` and ``labels``; ``compute_loss(outputs, labels)``
        gets the intervened outputs.  ``temperature_schedule=(start, end)`` anneals the
        Boundless DAS temperature over all steps.
        """
        from tqdm.auto import tqdm

        self.disable_model_gradients()
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable interventions: use a RotatedSpace, LowRankRotatedSpace, "
                             "BoundlessRotatedSpace or Autoencoder intervention")
        optimizer = torch.optim.Adam(params, lr=lr)
        batches = list(train_dataloader)
        total = epochs * len(batches)
        log = [] if log is None else log
        bar = tqdm(total=total, desc="train_alignment", disable=not progress)
        self.train()
        step = 0
        for epoch in range(epochs):
            for batch in batches:
                if temperature_schedule is not None:
                    t0, t1 = temperature_schedule
                    self.set_temperature(t0 + (t1 - t0) * step / max(1, total - 1))
                batch = inputs_collator(batch) if inputs_collator else batch
                _, out = self(batch["base"], batch.get("sources"), batch.get("unit_locations"),
                              subspaces=batch.get("subspaces"), output_original_output=False)
                loss = compute_loss(out, batch["labels"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                entry = {"epoch": epoch, "step": step, "loss": float(loss.detach())}
                if compute_metrics is not None:
                    with torch.no_grad():
                        entry.update(compute_metrics([out], [batch["labels"]]))
                log.append(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
                bar.update(1)
                step += 1
        bar.close()
        self.eval()
        return log

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
                       inputs_collator: Optional[Callable] = None, progress: bool = True) -> dict:
        """``compute_metrics(outputs_list, labels_list)`` over every batch, without grad
        (interchange intervention accuracy for the usual metric, ``iia``)."""
        from tqdm.auto import tqdm

        outs, labels = [], []
        with torch.no_grad():
            for batch in tqdm(list(eval_dataloader), desc="eval_alignment", disable=not progress):
                batch = inputs_collator(batch) if inputs_collator else batch
                _, out = self(batch["base"], batch.get("sources"), batch.get("unit_locations"),
                              subspaces=batch.get("subspaces"), output_original_output=False)
                outs.append(out)
                labels.append(batch["labels"])
        return compute_metrics(outs, labels)
