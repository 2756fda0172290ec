"""Network slimming (Liu et al. 2017): BN-scale sparsity, global-threshold channel pruning with
Torch-Pruning, fine-tuning, and a measured per-stage report."""
from normapps.tasks.slimming.module import SlimmingModule
from normapps.tasks.slimming.prune import SlimmingPlan, apply_plan, make_plan, masked_copy, slim
from normapps.tasks.slimming.sparsity import BNSparsity, add_bn_l1_subgradient

__all__ = ["SlimmingModule", "SlimmingPlan", "BNSparsity", "add_bn_l1_subgradient",
           "make_plan", "apply_plan", "masked_copy", "slim"]
