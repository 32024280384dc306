"""Placing a file's tensors into a MoCo model, strictly: each tensor has its place and its shape, each part of the
model (a backbone, a head, the predictor, the dictionary) comes whole from the file or not at all."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mocokit.weights.errors import WeightsError
from mocokit.weights.layouts import ForeignWeights

# tensors a file may lack within a part it holds: BatchNorm's step counters (absent from older files, harmless at 0)
# and the queue's key identities (mocokit's own: the keys of a foreign queue belong to no known image)
NETWORK_PARTS = ("encoder.", "momentum_encoder.", "predictor.")  # the rest of a MoCo state dict is its dictionary
_OPTIONAL = ("num_batches_tracked", "queue.ids")


@dataclass
class LoadReport:
    loaded: int  # tensors taken from the file
    parts: list[str]  # the model's parts that came from the file
    notes: list[str] = field(default_factory=list)  # what did not, and what it holds instead

    def describe(self) -> str:
        return f"{self.loaded} tensors into {', '.join(self.parts)}" + "".join(f"; {n}" for n in self.notes)


def _parts(model: nn.Module) -> list[str]:
    """The prefixes of the model's parts, in state-dict order: encoder.backbone., encoder.head., ..., queue."""
    parts: list[str] = []
    for name in model.state_dict():
        pieces = name.split(".")
        prefix = ".".join(pieces[:2]) + "." if pieces[0] in ("encoder", "momentum_encoder") else pieces[0] + "."
        if prefix not in parts:
            parts.append(prefix)
    return parts


@torch.no_grad()
def load_weights(model: nn.Module, weights: ForeignWeights, *, dictionary: bool = True) -> LoadReport:
    """Copy `weights` into `model` (a MoCo). dictionary=False leaves the model's queue or memory bank as it is and
    skips the file's (continued pretraining: an old queue is stale for new data). A part the file lacks keeps the
    model's values, except the momentum encoder, which becomes a copy of the query encoder (MoCo's own start).
    WeightsError naming the file and the first key that has no place, a wrong shape, or a part only partly there."""
    target = model.state_dict()
    parts = _parts(model)
    given: dict[str, torch.Tensor] = {}
    notes = list(weights.ignored)
    for name, tensor in weights.tensors.items():
        in_dictionary = not name.startswith(NETWORK_PARTS)  # queue.*, memory_bank.*
        unused_key_encoder = name.startswith("momentum_encoder.") and model.momentum_encoder is None
        if (in_dictionary and not dictionary) or unused_key_encoder:
            continue
        if name not in target:
            raise WeightsError(f"{weights.path}: {_named(weights, name)} has no place in this model (it has no "
                               f"{name}); check the model settings (--config / the run's config)")
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise WeightsError(f"{weights.path}: {_named(weights, name)} has shape {tuple(tensor.shape)}, the model's "
                               f"{name} {tuple(target[name].shape)}; check the model settings (--config / the run's "
                               "config)")
        given[name] = tensor
    skipped = [weights.origin.get(n, n) for n in weights.tensors if n not in given]
    if skipped:
        notes.append(f"{len(skipped)} tensors of the file not used ({skipped[0]}, ...): the queue of another run is "
                     "stale for new data, so the run fills its own before the first step (a key encoder: this "
                     "model has none)")
    loaded_parts = []
    for part in parts:
        names = [n for n in target if n.startswith(part)]
        present = [n for n in names if n in given]
        if not present:
            continue
        absent = [n for n in names if n not in given and not n.endswith(_OPTIONAL)]
        if absent:
            raise WeightsError(f"{weights.path} holds part of the model's {part[:-1]} but not {absent[0]} "
                               f"({len(absent)} of its {len(names)} tensors are missing)")
        loaded_parts.append(part[:-1])
    if "encoder.backbone." not in [p for p in parts if p[:-1] in loaded_parts]:
        raise WeightsError(f"{weights.path} holds no tensor of the query encoder's backbone")
    state = {**target, **given}
    for part in parts:
        if part[:-1] in loaded_parts:
            continue
        if part.startswith("momentum_encoder."):
            source = "encoder." + part[len("momentum_encoder."):]
            state.update({n: state[source + n[len(part):]] for n in target if n.startswith(part)})
            notes.append(f"{part[:-1]}: a copy of {source[:-1]}")
        elif part.startswith(("encoder.", "predictor.")):
            notes.append(f"{part[:-1]}: not in the file, randomly initialised")
        elif dictionary and not skipped:
            notes.append(f"{part[:-1]}: not in the file, random unit keys")
    model.load_state_dict(state, strict=True)
    return LoadReport(len(given), loaded_parts, notes)


def _named(weights: ForeignWeights, name: str) -> str:
    origin = weights.origin.get(name, name)
    return repr(origin) if origin == name else f"{origin!r} (as {name})"
