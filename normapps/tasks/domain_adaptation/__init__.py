"""Domain adaptation through normalization: test-time BN, AdaBN, TENT and DSBN, measured on
corrupted and shifted targets against the unadapted source model."""
from normapps.tasks.domain_adaptation.methods import METHODS, adapt_and_predict

__all__ = ["METHODS", "adapt_and_predict"]
