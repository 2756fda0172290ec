"""The classification task's LightningModule is the shared classifier of the model layer
(:mod:`normapps.models.classifier_module`); this path is kept so that older imports and configs
(``normapps.tasks.classification.module.ClassificationModule``) keep working."""
from normapps.models.classifier_module import OPTIMIZERS, SCHEDULERS, ClassificationModule, first_norm_layer

__all__ = ["ClassificationModule", "first_norm_layer", "OPTIMIZERS", "SCHEDULERS"]
