"""`model=torch`: a torch module from the user's code, `model.factory=package.module:function`.

The function takes no arguments and returns `(module, example_inputs)`: example inputs are a tuple of tensors
(named after the forward's parameters) or a dict name -> tensor. The module is exported by the same exporter as
the built-in models (`pipeline/builder/export.py`, dynamo), with a dynamic batch axis on every input and the other
axes dynamic wherever the model allows (`torch.export.Dim.AUTO`). Outputs: one tensor (`output`), a tuple or
list of tensors (`output_0`, `output_1`, ...) or a dict of tensors (its keys). Data: `calibration=npz`.

The factory is imported and called when the family is made, before any work, and anything that is not what
the contract says is refused naming the fix.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import re

import numpy as np

from calibration.arrays import InputSpec
from calibration.errors import one_line
from pipeline.builder.family import FamilyBase
from pipeline.builder.npz_data import NpzData
from pipeline.errors import InputError, UsageError
from pipeline.manifest import sha256_bytes

CONTRACT = ("model.factory must name a function taking no arguments that returns (module, example_inputs): a "
            "torch.nn.Module and a tuple of tensors or a dict name -> tensor")


def load_factory(text: str):
    """The function `package.module:function` names, imported."""
    module_name, colon, function_name = str(text).partition(":")
    if not colon or not module_name or not function_name:
        raise UsageError(f"model.factory={text!r} is not package.module:function (e.g. my_pkg.models:build)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"model.factory={text!r}: cannot import {module_name} ({one_line(error)}); install the "
                         f"package into this venv or add its folder to PYTHONPATH") from None
    except Exception as error:  # noqa: BLE001 - the user's module raised while importing
        raise InputError(f"model.factory={text!r}: importing {module_name} failed ({one_line(error)}); fix the "
                         f"module") from None
    function = getattr(module, function_name, None)
    if function is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise InputError(f"model.factory={text!r}: {module_name} has no {function_name}; its functions: "
                         f"{', '.join(names) or 'none'}")
    if not callable(function):
        raise InputError(f"model.factory={text!r}: {function_name} is a {type(function).__name__}, not a function")
    return function


def _forward_parameters(module) -> list[str]:
    parameters = inspect.signature(module.forward).parameters.values()
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _output_names(outputs, where: str) -> list[str]:
    import torch
    if isinstance(outputs, torch.Tensor):
        return ["output"]
    if isinstance(outputs, (tuple, list)) and outputs and all(isinstance(o, torch.Tensor) for o in outputs):
        return [f"output_{i}" for i in range(len(outputs))]
    if isinstance(outputs, dict) and outputs and all(isinstance(o, torch.Tensor) for o in outputs.values()):
        return [str(name) for name in outputs]
    raise InputError(f"{where}: the module returns {type(outputs).__name__}; quantgate exports a module returning a "
                     f"tensor, a tuple/list of tensors or a dict of tensors: wrap it to return those")


def call_factory(text: str):
    """(module, input names, example inputs as a tuple in that order, output names), checked."""
    import torch

    function = load_factory(text)
    where = f"model.factory={text!r}"
    try:
        made = function()
    except Exception as error:  # noqa: BLE001 - the user's code
        raise InputError(f"{where} raised {one_line(error)}; {CONTRACT}") from None
    if not (isinstance(made, tuple) and len(made) == 2):
        raise InputError(f"{where} returned {type(made).__name__}; {CONTRACT}")
    module, examples = made
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{where} returned a {type(module).__name__} as the module; {CONTRACT}")
    parameters = _forward_parameters(module)
    if isinstance(examples, torch.Tensor):
        examples = (examples,)
    if isinstance(examples, dict):
        unknown = [name for name in examples if name not in parameters]
        if unknown or not examples:
            raise InputError(f"{where}: example input(s) {unknown or '(none)'} are not parameters of the module's "
                             f"forward{tuple(parameters)}; name the dict's keys after them")
        names = [name for name in parameters if name in examples]
        values = [examples[name] for name in names]
    elif isinstance(examples, (tuple, list)) and examples:
        if len(examples) > len(parameters):
            raise InputError(f"{where}: {len(examples)} example inputs for forward{tuple(parameters)}; give one "
                             f"tensor per parameter")
        names, values = parameters[:len(examples)], list(examples)
    else:
        raise InputError(f"{where} returned {type(examples).__name__} as example inputs; {CONTRACT}")
    wrong = [name for name, value in zip(names, values) if not isinstance(value, torch.Tensor)]
    if wrong:
        raise InputError(f"{where}: example input(s) {wrong} are not tensors; {CONTRACT}")
    flat = [name for name, value in zip(names, values) if value.dim() == 0]
    if flat:
        raise InputError(f"{where}: example input(s) {flat} are scalars; every input needs axis 0 = examples")
    floats = {name: str(value.dtype) for name, value in zip(names, values)
              if value.is_floating_point() and value.dtype != torch.float32}
    floats |= {name: str(p.dtype) for name, p in [*module.named_parameters(), *module.named_buffers()]
               if p.is_floating_point() and p.dtype != torch.float32}
    if floats:
        first = next(iter(floats))
        raise InputError(f"{where}: not an fp32 model: {first} is {floats[first]}"
                         f"{f' (and {len(floats) - 1} more)' if len(floats) > 1 else ''}; return the module and "
                         f"inputs in float32 (module.float())")
    # A batch of one would be specialised by torch.export (0/1 specialisation): show it two examples.
    values = tuple(torch.cat([value, value]) if value.shape[0] == 1 else value for value in values)
    module = module.eval()
    try:
        with torch.no_grad():
            outputs = module(*values)
    except Exception as error:  # noqa: BLE001 - the user's code
        raise InputError(f"{where}: the module fails on its own example inputs ({one_line(error)})") from None
    return module, names, values, _output_names(outputs, where)


class TorchFamily(NpzData, FamilyBase):
    """A user's torch module from `model.factory`; torch.export's refusals in the user's terms (`export_refused`)."""

    kind: str  # model.kind
    input_names: list[str]  # the forward's parameters the example inputs fill
    output_names: list[str]  # output, output_0.., or the returned dict's keys

    def __init__(self, cfg):
        self.cfg = cfg
        self.module, self.input_names, self._examples, self.output_names = call_factory(cfg.model.factory)
        self.kind = str(cfg.model.kind)

    @property
    def source_name(self) -> str:
        return f"{self.cfg.model.factory} ({type(self.module).__name__})"

    def input_specs(self) -> list[InputSpec]:
        import torch
        specs = []
        for name, value in zip(self.input_names, self._examples):
            dtype = torch.empty((), dtype=value.dtype).numpy().dtype
            specs.append(InputSpec(name, np.dtype(dtype), (None,) * value.dim()))
        return specs

    def data(self):
        """The npz pool; the module must also run on its arrays (axes the names and ranks cannot show)."""
        import torch
        splits = super().data()
        first = {name: torch.from_numpy(array[:2]) for name, array in self.arrays().arrays.items()}
        try:
            with torch.no_grad():
                self.module(*[first[name] for name in self.input_names])
        except Exception as error:  # noqa: BLE001 - the user's code on the user's data
            shapes = {name: list(value.shape) for name, value in first.items()}
            examples = {name: list(value.shape) for name, value in zip(self.input_names, self._examples)}
            raise InputError(f"calibration.path={self.cfg.calibration.path}: the module fails on these arrays "
                             f"({one_line(error)}); shapes {shapes}, the factory's example inputs {examples}") from None
        return splits

    def load_torch(self):
        # torch logs a failed shape guard with its stack before raising; export_refused says it in one line.
        logging.getLogger("torch._guards").setLevel(logging.CRITICAL)
        return self.module

    def export_refused(self, error: Exception) -> InputError:
        """Why torch.export could not export the module, in words, with what to change."""
        chain, seen = [], error  # the exporter wraps torch.export's error, which may wrap a shape constraint's
        while seen is not None and seen not in chain:
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__

        def first_line(exception):
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exception)).strip()
            return text.splitlines()[0] if text else type(exception).__name__

        cause = next((e for e in chain if "Constraints violated" in first_line(e)), None)
        if cause is None:
            cause = error
            while cause.__cause__ is not None:
                cause = cause.__cause__
        first = first_line(cause)
        hint = ("forward must work for any batch size (no reshape or view to the example's batch, no Python "
                "branches on shapes)" if "Constraints violated" in first else
                "make forward exportable by torch.export (https://pytorch.org/docs/stable/export.html), e.g. no "
                "data-dependent Python control flow")
        return InputError(f"model.factory={self.cfg.model.factory!r}: torch.export cannot export the module with a "
                          f"dynamic batch axis ({type(cause).__name__}: {first[:300]}); {hint}")

    def weights_sha256(self) -> str:
        state = self.module.state_dict()
        return sha256_bytes(b"".join(key.encode() + state[key].detach().cpu().contiguous().numpy().tobytes()
                                     for key in sorted(state)))

    def example_inputs(self) -> tuple:
        return self._examples

    def dynamic_shapes(self) -> tuple:
        import torch
        batch = torch.export.Dim("batch", min=1, max=4096)
        return tuple({0: batch, **{axis: torch.export.Dim.AUTO for axis in range(1, value.dim())}}
                     for value in self._examples)
