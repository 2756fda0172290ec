"""The fixed table of this project's LightningModule classes that a checkpoint may name.

A checkpoint never chooses what Python imports: it names an entry of ``MODULES`` (older
checkpoints: a dotted ``module_class`` that must equal an entry's path), and the class is imported
from the dotted path written *here*, in this file, only once it is known to be one of ours.

Adding a module class (a new network, a new task) is one line in ``MODULES``::

    ModuleEntry("my_network", "normapps.tasks.<task>.<module>.<Class>",  # or normapps.models...
                task="<task>", network="my_network"),

``name`` is what new checkpoints record (``meta["module"]``), ``network`` says what network the
checkpoint holds (so a loader can later accept any checkpoint holding a classifier, whichever
task wrote it), ``legacy`` lists dotted paths older checkpoints recorded for the same class
(keep them when a class moves, so those checkpoints still load).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModuleEntry:
    name: str
    target: str
    task: str
    network: str
    legacy: tuple[str, ...] = ()

    def load(self) -> type:
        module_name, _, attr = self.target.rpartition(".")
        return getattr(importlib.import_module(module_name), attr)


_ENTRIES = (
    ModuleEntry("classifier", "normapps.models.classifier_module.ClassificationModule",
                task="classification", network="classifier",
                legacy=("normapps.tasks.classification.module.ClassificationModule",)),
    ModuleEntry("slimmed_classifier", "normapps.tasks.slimming.module.SlimmingModule",
                task="slimming", network="classifier"),
    ModuleEntry("adain", "normapps.tasks.style_transfer.module.StyleTransferModule",
                task="style_transfer", network="adain"),
    ModuleEntry("cin", "normapps.tasks.style_transfer.cin_module.CINStyleModule",
                task="style_transfer", network="cin_transformer"),
    ModuleEntry("arbitrary_cin", "normapps.tasks.style_transfer.cin_module.ArbitraryCINModule",
                task="style_transfer", network="arbitrary_cin"),
    ModuleEntry("gan", "normapps.tasks.gan.module.GANModule", task="gan", network="gan"),
)

MODULES: dict[str, ModuleEntry] = {e.name: e for e in _ENTRIES}

# The entry a checkpoint that names only its task resolves to.
TASK_DEFAULTS: dict[str, str] = {"classification": "classifier", "slimming": "slimmed_classifier",
                                 "style_transfer": "adain", "gan": "gan"}

TASKS: tuple[str, ...] = tuple(sorted({e.task for e in _ENTRIES}))


class RegistryError(LookupError):
    """A name that is not one of this project's module classes."""


def dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def entry_for_class(cls: type) -> ModuleEntry:
    """The entry whose path is ``cls`` (what a module records when it saves a checkpoint)."""
    dotted = dotted_name(cls)
    for entry in _ENTRIES:
        if dotted == entry.target or dotted in entry.legacy:
            return entry
    raise RegistryError(
        f"{dotted} is not in normapps.platform.registry.MODULES, so its checkpoints could not be "
        "loaded back: add a ModuleEntry for it")


def entry_for_dotted(dotted: str) -> ModuleEntry | None:
    """The entry an old checkpoint's ``module_class`` string names, by string equality only."""
    for entry in _ENTRIES:
        if dotted == entry.target or dotted in entry.legacy:
            return entry
    return None


def module_class(name: str) -> type:
    if name not in MODULES:
        raise RegistryError(f"unknown module {name!r} (known: {', '.join(MODULES)})")
    return MODULES[name].load()
