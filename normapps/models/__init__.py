"""Networks shared by tasks; every norm layer inside comes from normapps.norm.build_norm."""
from normapps.models.classifiers import CLASSIFIER_ARCHS, build_classifier

__all__ = ["CLASSIFIER_ARCHS", "build_classifier"]
