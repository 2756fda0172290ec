"""Domain adaptation through normalization: test-time BN, prior BN, AdaBN, TENT, EATA, SAR and
DSBN + self-training, measured on corrupted and shifted targets, under reset / continual /
mixed / label-shifted streams, against the unadapted source model."""
from normapps.tasks.domain_adaptation.methods import METHODS, PROTOCOLS, adapt_and_predict

__all__ = ["METHODS", "PROTOCOLS", "adapt_and_predict"]
