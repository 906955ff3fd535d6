"""pyvene's causal abstraction toolkit: ``CausalModel``, a program as a DAG of variables,
with the calls pyvene's DAS and IIT tutorials build their data with.

    model = CausalModel(variables, values, parents, functions)
    model.run_forward({"A": 1, "B": 2})                     # every variable's value
    model.run_interchange(base, {"X": source})              # X's value taken from source
    model.generate_counterfactual_dataset(size, intervention_id, batch_size,
                                          sampler=model.sample_input_tree_balanced)

Sampling draws from Python's ``random`` in the order pyvene 0.1.8 does, so one seed gives
pyvene's data sets.  Pictures use matplotlib (pyvene needs networkx for them).
"""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch


class CausalModel:
    """Variables (sorted by name, then by timestep), their possible ``values``, ``parents``
    and ``functions`` (a variable's value from its parents' values; inputs take none)."""

    def __init__(self, variables: list, values: dict, parents: dict, functions: dict,
                 timesteps: Optional[dict] = None, equiv_classes: Optional[dict] = None,
                 pos: Optional[dict] = None) -> None:
        self.variables = variables
        self.variables.sort()
        self.values, self.parents, self.functions = values, parents, functions
        for var in self.variables:
            for table, what in ((values, "values"), (parents, "parents"), (functions, "functions")):
                if var not in table:
                    raise ValueError(f"causal model: variable {var!r} has no {what}")
            unknown = [p for p in parents[var] if p not in self.variables]
            if unknown:
                raise ValueError(f"causal model: {var!r} has parents {unknown} that are not variables")
        self.children: dict = {var: [] for var in variables}
        for var in variables:
            for parent in parents[var]:
                self.children[parent].append(var)
        self.inputs = [var for var in self.variables if len(parents[var]) == 0]
        self.outputs = [var for var in self.variables if not self.children[var]]
        if timesteps is not None:
            self.timesteps = timesteps
            for var in self.variables:
                if var not in timesteps:
                    raise ValueError(f"causal model: variable {var!r} has no timestep")
                for parent in parents[var]:
                    if timesteps[parent] >= timesteps[var]:
                        raise ValueError(f"causal model: {parent!r} must come before its child {var!r}")
        else:
            self.timesteps, self.end_time = self.generate_timesteps()
            for output in self.outputs:
                self.timesteps[output] = self.end_time
        self.variables.sort(key=lambda x: self.timesteps[x])
        self.run_forward()  # every function runs once: a broken one fails here, not later
        self.pos = dict(pos or {})
        width: dict = {}
        for var in self.variables:
            if var not in self.pos:
                t = self.timesteps[var]
                self.pos[var] = (width.get(t, 0), t)
                width[t] = width.get(t, 0) + 1
        self.equiv_classes = equiv_classes if equiv_classes is not None else {}

    # -- structure ---------------------------------------------------------------------

    def generate_timesteps(self) -> tuple[dict, int]:
        """Inputs at 0, every other variable one after its latest parent; (timesteps, the
        last step)."""
        timesteps = {var: 0 for var in self.inputs}
        step, change = 1, True
        while change:
            change = False
            new = dict(timesteps)
            for parent, t in timesteps.items():
                if t == step - 1:
                    for child in self.children[parent]:
                        new[child] = step
                        change = True
            timesteps = new
            step += 1
        missing = [v for v in self.variables if v not in timesteps]
        if missing:
            raise ValueError(f"causal model: {missing} are not reachable from the inputs")
        return timesteps, step - 2

    def generate_equiv_classes(self) -> None:
        """For every non-input variable and value, the parent settings that produce it."""
        for var in self.variables:
            if var in self.inputs or var in self.equiv_classes:
                continue
            self.equiv_classes[var] = {val: [] for val in self.values[var]}
            for parent_values in itertools.product(*[self.values[p] for p in self.parents[var]]):
                value = self.functions[var](*parent_values)
                self.equiv_classes[var][value].append(
                    {p: parent_values[i] for i, p in enumerate(self.parents[var])})

    # -- running -----------------------------------------------------------------------

    def run_forward(self, intervention: Optional[dict] = None) -> dict:
        """Every variable's value, with ``intervention``'s variables fixed to its values."""
        setting: dict = {}
        for var in self.variables:  # timestep order: parents come first
            if intervention is not None and var in intervention:
                setting[var] = intervention[var]
            else:
                setting[var] = self.functions[var](*[setting[p] for p in self.parents[var]])
        return setting

    def run_interchange(self, input: dict, source_interventions: dict) -> dict:
        """``input`` run with each named variable set to its value under its own source."""
        setting = copy.deepcopy(input)
        for var, source in source_interventions.items():
            setting[var] = self.run_forward(source)[var]
        return self.run_forward(setting)

    def find_live_paths(self, intervention: dict) -> dict:
        """Paths (by length) along which changing a variable changes its child."""
        actual = self.run_forward(intervention)
        paths = {1: [[var] for var in self.variables]}
        step = 2
        while True:
            paths[step] = []
            for path in paths[step - 1]:
                for child in self.children[path[-1]]:
                    for value in self.values[path[-1]]:
                        changed = dict(intervention, **{path[-1]: value})
                        if self.run_forward(changed)[child] != actual[child]:
                            paths[step].append(path + [child])
                            break
            if not paths[step]:
                break
            step += 1
        del paths[1]
        return paths

    def add_variable(self, variable: str, values: list, parents: list, children: list,
                     function: Callable, timestep: Optional[int] = None) -> None:
        """Add a variable (its parents and children must exist)."""
        for other in list(parents) + list(children):
            if other not in self.variables:
                raise ValueError(f"causal model: {other!r} is not a variable")
        if timestep is not None:
            self.timesteps[variable] = timestep
        self.parents[variable], self.children[variable] = parents, children
        self.values[variable], self.functions[variable] = values, function

    # -- sampling ----------------------------------------------------------------------

    def sample_intervention(self, mandatory: Any = None) -> dict:
        """A random non-empty setting of intermediate variables (neither input nor output)."""
        inner = [v for v in self.variables if v not in self.inputs and v not in self.outputs]
        if not inner:
            raise ValueError("causal model: no intermediate variable to intervene on")
        intervention: dict = {}
        while not intervention:
            for var in self.variables:
                if var in self.inputs or var in self.outputs:
                    continue
                if random.choice([0, 1]) == 0:
                    intervention[var] = random.choice(self.values[var])
        return intervention

    def sample_input(self, mandatory: Optional[Callable] = None) -> dict:
        """Random input values (redrawn until ``mandatory(full setting)`` holds, if given)."""
        input = {var: random.sample(self.values[var], 1)[0] for var in self.inputs}
        while mandatory is not None and not mandatory(self.run_forward(intervention=input)):
            input = {var: random.sample(self.values[var], 1)[0] for var in self.inputs}
        return input

    def sample_input_tree_balanced(self, output_var: Optional[str] = None,
                                   output_var_value: Any = None) -> dict:
        """Inputs drawn top-down so that ``output_var`` (default: the one output) takes each
        value equally often: ``output_var_value`` if given."""
        if output_var is None:
            if len(self.outputs) != 1:
                raise ValueError(f"name output_var: the model has outputs {self.outputs}")
            output_var = self.outputs[0]
        self.generate_equiv_classes()
        if output_var_value is None:
            output_var_value = random.choice(self.values[output_var])

        def create(var: str, value: Any, input: dict) -> dict:
            parent_values = random.choice(self.equiv_classes[var][value])
            for parent in parent_values:
                if parent in self.inputs:
                    input[parent] = parent_values[parent]
                else:
                    create(parent, parent_values[parent], input)
            return input

        setting = {output_var: output_var_value} if output_var in self.inputs else create(output_var, output_var_value, {})
        for var in self.inputs:
            if var not in setting:
                setting[var] = random.choice(self.values[var])
        return setting

    def get_path_maxlen_filter(self, lengths: Sequence[int]) -> Callable[[dict], bool]:
        """A filter: the longest live path of a setting's inputs has a length in ``lengths``."""
        def check(setting: dict) -> bool:
            paths = self.find_live_paths({var: setting[var] for var in self.inputs})
            return max(k for k, v in paths.items() if v) in lengths if any(paths.values()) else False
        return check

    def get_partial_filter(self, partial_setting: dict) -> Callable[[dict], bool]:
        """A filter: the setting agrees with ``partial_setting``."""
        return lambda setting: all(setting[var] == val for var, val in partial_setting.items())

    def get_specific_path_filter(self, start: str, end: str) -> Callable[[dict], bool]:
        """A filter: a live path runs from ``start`` to ``end``."""
        def check(setting: dict) -> bool:
            paths = self.find_live_paths({var: setting[var] for var in self.inputs})
            return any(p[0] == start and p[-1] == end for ps in paths.values() for p in ps)
        return check

    # -- data sets ---------------------------------------------------------------------

    def input_to_tensor(self, setting: dict) -> torch.Tensor:
        """The inputs' values (in ``self.inputs`` order) as one float vector."""
        return torch.cat([torch.tensor(setting[var]).float().reshape(-1) for var in self.inputs])

    def output_to_tensor(self, setting: dict) -> torch.Tensor:
        """The outputs' values as one float vector."""
        return torch.cat([torch.tensor(float(setting[var])).reshape(-1) for var in self.outputs])

    def generate_factual_dataset(self, size: int, sampler: Optional[Callable] = None,
                                 filter: Optional[Callable] = None, device: str = "cpu",
                                 input_function: Optional[Callable] = None,
                                 output_function: Optional[Callable] = None,
                                 return_tensors: bool = True) -> list[dict]:
        """``size`` examples ``{"input_ids", "labels"}`` of the model run on sampled inputs."""
        sampler = sampler or self.sample_input
        input_function = input_function or self.input_to_tensor
        output_function = output_function or self.output_to_tensor
        examples = []
        while len(examples) < size:
            input = sampler()
            if filter is None or filter(input):
                output = self.run_forward(input)
                if return_tensors:
                    examples.append({"input_ids": input_function(input).to(device),
                                     "labels": output_function(output).to(device)})
                else:
                    examples.append({"input_ids": input, "labels": output})
        return examples

    def generate_counterfactual_dataset(self, size: int, intervention_id: Callable, batch_size: int,
                                        sampler: Optional[Callable] = None,
                                        intervention_sampler: Optional[Callable] = None,
                                        filter: Optional[Callable] = None, device: str = "cpu",
                                        input_function: Optional[Callable] = None,
                                        output_function: Optional[Callable] = None,
                                        return_tensors: bool = True) -> list[dict]:
        """Interchange examples in batches sharing one sampled intervention: ``input_ids``
        (the base), ``source_input_ids`` (one source per intermediate variable, zeros where
        unused), ``labels`` (the counterfactual output), ``base_labels`` and
        ``intervention_id``.  Sources are drawn so that their variable takes the
        intervention's value (``sampler(output_var=..., output_var_value=...)``; the default
        sampler draws bases with ``sample_input`` and sources tree-balanced)."""
        if not callable(intervention_id):
            raise ValueError("intervention_id must be a function of the sampled intervention "
                             "(a dict of variables) returning an int")
        input_function = input_function or self.input_to_tensor
        output_function = output_function or self.output_to_tensor
        base_sampler = sampler or self.sample_input
        source_sampler = sampler or self.sample_input_tree_balanced
        intervention_sampler = intervention_sampler or self.sample_intervention
        maxlength = len([v for v in self.variables if v not in self.inputs and v not in self.outputs])
        examples: list = []
        while len(examples) < size:
            intervention = intervention_sampler()
            if filter is not None and not filter(intervention):
                continue
            for _ in range(batch_size):
                base = base_sampler()
                sources, by_var = [], {}
                for var in self.variables:
                    if var not in intervention:
                        continue
                    source = source_sampler(output_var=var, output_var_value=intervention[var])
                    sources.append(input_function(source) if return_tensors else source)
                    by_var[var] = source
                for _ in range(maxlength - len(sources)):
                    sources.append(torch.zeros(input_function(base).shape) if return_tensors else {})
                counterfactual, factual = self.run_interchange(base, by_var), self.run_forward(base)
                if return_tensors:
                    examples.append({"labels": output_function(counterfactual).to(device),
                                     "base_labels": output_function(factual).to(device),
                                     "input_ids": input_function(base).to(device),
                                     "source_input_ids": torch.stack(sources).to(device),
                                     "intervention_id": torch.tensor([intervention_id(intervention)]).to(device)})
                else:
                    examples.append({"labels": counterfactual, "base_labels": factual, "input_ids": base,
                                     "source_input_ids": sources,
                                     "intervention_id": [intervention_id(intervention)]})
        return examples

    # -- pictures ----------------------------------------------------------------------

    def print_structure(self, pos: Optional[dict] = None, font: int = 12, node_size: int = 1000,
                        path: Union[None, str, Path] = None) -> Any:
        """Draw the DAG (inputs at the bottom); shown, or written to ``path`` (a PNG)."""
        return self._draw({v: v for v in self.variables}, pos or self.pos, font, node_size, path)

    def print_setting(self, total_setting: dict, font: int = 12, node_size: int = 1000,
                      path: Union[None, str, Path] = None) -> Any:
        """Draw the DAG with every variable's value in a setting."""
        return self._draw({v: f"{v}: {total_setting[v]}" for v in self.variables}, self.pos, font,
                          node_size, path)

    def _draw(self, labels: dict, pos: dict, font: int, node_size: int, path: Any) -> Any:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 6))
        for child in self.variables:
            for parent in self.parents[child]:
                (x0, y0), (x1, y1) = pos[parent], pos[child]
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                            arrowprops={"arrowstyle": "->", "color": "0.4", "shrinkA": 14, "shrinkB": 14})
        for var in self.variables:
            x, y = pos[var]
            ax.scatter([x], [y], s=node_size, color="tab:green", zorder=2)
            ax.annotate(labels[var], (x, y), ha="center", va="center", fontsize=font, zorder=3)
        ax.set_axis_off()
        ax.margins(0.2)
        if path is not None:
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            return Path(path)
        plt.show()
        return fig
