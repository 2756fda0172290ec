"""Graph preparation shared by the quantization backends."""
from __future__ import annotations

import copy

import torch
from torch import nn


def unshare_modules(model: nn.Module) -> torch.fx.GraphModule:
    """fx-trace ``model`` and give every call of a re-used leaf module its own copy.

    torchvision-style ResNet blocks call one ``self.relu`` twice; torchao's PT2E
    X86InductorQuantizer groups both calls into one source partition and raises "Input
    partition has more than one output node". Separate module instances (and no inherited
    ``nn_module_stack`` metadata, which would still name the shared module) fix that without
    changing the function.
    """
    gm = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    calls: dict[str, int] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        calls[node.target] = calls.get(node.target, 0) + 1
        if calls[node.target] > 1:
            new_name = f"{node.target.replace('.', '_')}_call{calls[node.target]}"
            gm.add_submodule(new_name, copy.deepcopy(gm.get_submodule(node.target)))
            node.target = new_name
        node.meta.pop("nn_module_stack", None)
    gm.graph.lint()
    gm.recompile()
    return gm
