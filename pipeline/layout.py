"""Which axis of each input and output of an ONNX graph holds the examples (its batch axis), found from the graph.

In order, for each input:

1. `model.batch_axes` names it (`{state: 1}`; `{sr: null}`: not batched, given once);
2. a rank-0 input (a sample rate, a temperature) is not batched;
3. the batch dimension: the symbolic dimension shared by the most inputs (`batch`, `N`, `s0`), where the input has it;
4. a recurrent op's state: a graph input that is an `LSTM`/`GRU`/`RNN`'s `initial_h`/`initial_c` (or `X`), at the
   batch position of the op's `layout` (`[num_directions, batch, hidden]` by default), in any subgraph;
5. the input's only dynamic axis (a dimension without a value, or written -1 or 0 as some exporters do); the
   first, when several are dynamic;
6. none: an input with every axis fixed is given once and broadcast; unless every input's are (a model exported
   for one batch size), which are batched on axis 0 as before.

Outputs: the shared batch dimension in their (inferred) shapes, else axis 0. Every found axis carries the reason, for
errors that name it. The arrays themselves are sliced by `calibration/layout.py`.

State carried (a streaming model: the output of one chunk is the input of the next): `model.state` names the pairs
(`{stateN: state}`, output -> input); otherwise an output pairs with an input when their names say so (`stateN` /
`state_out` / `next_state` for `state`, `hn` for `h0`, `present.*` for `past.*` or `past_key_values.*`) and their
shapes agree (rank, fixed axes, batch axis).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.errors import InputError

RECURRENT_STATE_INPUTS = {"LSTM": (0, 5, 6), "GRU": (0, 5), "RNN": (0, 5)}  # X, initial_h, initial_c


@dataclass
class Layout:
    """Batch axes of the graph's inputs and outputs (None: not batched), and why each input's was chosen."""

    inputs: dict[str, int | None] = field(default_factory=dict)
    outputs: dict[str, int | None] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)  # output -> the input it feeds at the next chunk

    def to_json(self) -> dict:
        """The record the manifest keeps and verification reads ({} when batch-first and stateless)."""
        if self.batch_first() and not self.state:
            return {}
        return {"inputs": dict(self.inputs), "outputs": dict(self.outputs)} | (
            {"state": dict(self.state)} if self.state else {})

    def batch_first(self) -> bool:
        """Every input and output is batched on axis 0 (the layout every model had before)."""
        return all(axis == 0 for axis in [*self.inputs.values(), *self.outputs.values()])


def dims(value) -> list | None:
    """A value's dimensions: an int for a fixed axis, its name for a symbolic one, None for an unnamed dynamic one
    (-1 and 0 count as dynamic: exporters write them so); None for the whole when the graph does not say the rank."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    shape = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or None)
    return shape


def graph_inputs(model) -> list:
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def all_graphs(graph):
    """The graph and every subgraph (If / Loop / Scan bodies)."""
    import onnx
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attribute.g)
            for sub in attribute.graphs:
                yield from all_graphs(sub)


def recurrent_axes(model) -> dict[str, tuple[int, str]]:
    """Graph inputs fed straight into a recurrent op: their batch axis and the op that says so."""
    names = {value.name for value in graph_inputs(model)}
    found = {}
    for graph in all_graphs(model.graph):
        for node in graph.node:
            for position in RECURRENT_STATE_INPUTS.get(node.op_type, ()):
                if position < len(node.input) and node.input[position] in names:
                    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
                    role = {0: "X", 5: "initial_h", 6: "initial_c"}[position]
                    axis = (1 if layout == 0 else 0)
                    found.setdefault(node.input[position], (axis, f"the {role} of {node.op_type} {node.name or ''} "
                                                                  f"(layout {layout})".replace("  ", " ")))
    return found


def batch_symbol(shapes: list[list | None]) -> str | None:
    """The symbolic dimension shared by the most inputs (ties: the one that is axis 0 more often, then the first)."""
    seen, first = Counter(), Counter()
    for shape in shapes:
        names = {dim for dim in shape or () if isinstance(dim, str)}
        seen.update(names)
        if shape and isinstance(shape[0], str):
            first[shape[0]] += 1
    if not seen:
        return None
    order = list(dict.fromkeys(dim for shape in shapes for dim in shape or () if isinstance(dim, str)))
    return max(order, key=lambda name: (seen[name], first[name], -order.index(name)))


def input_axis(name: str, shape: list | None, symbol: str | None, recurrent: dict) -> tuple[int | None, str]:
    """One input's batch axis by rules 2-6 of the module's docstring, and why."""
    if shape is None:
        return 0, "the graph does not say its rank: axis 0"
    if not shape:
        return None, "a scalar: given once"
    if symbol is not None and symbol in shape:
        return shape.index(symbol), f"the batch dimension {symbol!r} the inputs share"
    if name in recurrent:
        return recurrent[name]
    dynamic = [axis for axis, dim in enumerate(shape) if not isinstance(dim, int)]
    if len(dynamic) == 1:
        return dynamic[0], "its only dynamic axis"
    if dynamic and dynamic[0] == 0:
        return 0, f"the first of its dynamic axes {dynamic}"
    if dynamic:  # axis 0 fixed, several others dynamic ([2, 3, H, W]): which is the batch is a guess, not made
        shown = ["?" if axis in dynamic else dim for axis, dim in enumerate(shape)]
        raise InputError(f"input {name} {shown} has a fixed first axis ({shape[0]}) and several dynamic axes "
                         f"{dynamic}: quantgate cannot tell which one holds the examples; name it, e.g. "
                         f"+model.batch_axes.{name}={dynamic[0]}, or export the model with a dynamic batch axis")
    return None, "every axis fixed: given once"


def output_axes(model, symbol: str | None) -> dict[str, int | None]:
    """Each output's batch axis: where the batch dimension is in its shape (inferred when the file does not say)."""
    import onnx
    outputs = list(model.graph.output)
    if symbol is not None and not all(symbol in (dims(value) or ()) for value in outputs):
        try:
            outputs = list(onnx.shape_inference.infer_shapes(model).graph.output)
        except Exception:  # noqa: BLE001 - inference is a help, not a requirement
            pass
    axes = {}
    for value in outputs:
        shape = dims(value)
        axes[value.name] = shape.index(symbol) if symbol and shape and symbol in shape else (
            None if shape == [] else 0)
    return axes


def find_layout(model, configured: dict | None = None, where: str = "the model", state: dict | None = None) -> Layout:
    """The batch axes of `model`'s inputs and outputs and its state pairs (the module's docstring), `configured`
    (model.batch_axes) and `state` (model.state) taking precedence."""

    configured = dict(configured or {})
    inputs = graph_inputs(model)
    names = [value.name for value in inputs]
    unknown = [name for name in configured if name not in names]
    if unknown:
        raise InputError(f"model.batch_axes names {unknown}, which {where} does not take; its inputs: {names}")
    shapes = {value.name: dims(value) for value in inputs}
    symbol = batch_symbol([shapes[name] for name in names if name not in configured])
    recurrent = recurrent_axes(model)
    layout = Layout()
    for name in names:
        shape = shapes[name]
        if name in configured:
            axis = configured[name]
            if axis is not None and shape is not None and not -len(shape) <= int(axis) < len(shape):
                raise InputError(f"model.batch_axes={{{name}: {axis}}}: input {name} has {len(shape)} axes "
                                 f"{shape}; name an axis 0..{len(shape) - 1}, or null for an input given once")
            axis = None if axis is None else int(axis) % len(shape) if shape else int(axis)
            layout.inputs[name], layout.why[name] = axis, "model.batch_axes"
        else:
            layout.inputs[name], layout.why[name] = input_axis(name, shape, symbol, recurrent)
    if all(axis is None for axis in layout.inputs.values()):  # a model exported for one fixed batch size
        for name in names:
            if shapes[name] and name not in configured:
                layout.inputs[name], layout.why[name] = 0, "every input's axes fixed: a fixed batch on axis 0"
    layout.outputs = output_axes(model, symbol)
    layout.state = state_pairs(model, layout, dict(state or {}), where)
    return layout


STATE_SUFFIXES = ("N", "n", "_out", "_next", "_new", ".out", "Out")
STATE_PREFIXES = ("next_", "new_", "out_")


def names_pair(output: str, input_name: str) -> bool:
    """Whether an output's name says it is the next value of this input."""
    if any(output == input_name + suffix for suffix in STATE_SUFFIXES) or \
            any(output == prefix + input_name for prefix in STATE_PREFIXES):
        return True
    if input_name.endswith("0") and output == input_name[:-1] + "n":  # h0 -> hn, c0 -> cn
        return True
    for past in ("past_key_values.", "past."):  # present.0.key for past_key_values.0.key
        if input_name.startswith(past) and output.startswith("present.") and \
                output[len("present."):] == input_name[len(past):]:
            return True
    return False


def state_pairs(model, layout: Layout, configured: dict, where: str) -> dict[str, str]:
    """Outputs that feed inputs at the next chunk (output -> input): `configured` (model.state), else by name and
    shape (the module's docstring)."""

    inputs = {value.name: dims(value) for value in graph_inputs(model)}
    outputs = {value.name: dims(value) for value in model.graph.output}
    for output, input_name in configured.items():
        if output not in outputs or input_name not in inputs:
            raise InputError(f"model.state={{{output}: {input_name}}}: {where} has no output {output!r} or no input "
                             f"{input_name!r} (outputs: {list(outputs)}; inputs: {list(inputs)}); name an output and "
                             f"the input it feeds at the next chunk")
    if configured:
        return configured

    def same_shape(a, b) -> bool:
        return a is None or b is None or (len(a) == len(b) and all(
            not isinstance(x, int) or not isinstance(y, int) or x == y for x, y in zip(a, b)))

    return {output: input_name for output in outputs for input_name in inputs
            if names_pair(output, input_name) and same_shape(outputs[output], inputs[input_name])
            and layout.outputs.get(output) == layout.inputs.get(input_name)}


def with_batch_axes(specs: list, layout: Layout) -> list:
    """The calibration library's InputSpecs with the batch axis (and why) `layout` found for each."""
    from dataclasses import replace
    return [replace(spec, batch_axis=layout.inputs.get(spec.name, 0), axis_source=layout.why.get(spec.name, ""))
            for spec in specs]
