"""The shared model layer: networks and the classifier LightningModule that several tasks use;
every norm layer inside comes from normapps.norm.build_norm."""
from normapps.models.classifiers import CLASSIFIER_ARCHS, build_classifier


def __getattr__(name: str):
    # ClassificationModule pulls in Lightning and the platform: imported on first use, so that
    # code needing only the networks (normapps.models.build_classifier) stays light.
    if name == "ClassificationModule":
        from normapps.models.classifier_module import ClassificationModule

        return ClassificationModule
    raise AttributeError(f"module 'normapps.models' has no attribute {name!r}")


__all__ = ["CLASSIFIER_ARCHS", "build_classifier", "ClassificationModule"]
