"""One sub-package per application; each exposes its LightningModule, runner and infer entry."""
