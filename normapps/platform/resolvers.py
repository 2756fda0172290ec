"""OmegaConf resolvers usable in every config (registered when train.py / infer.py import them)."""
from omegaconf import OmegaConf


def linear_scaled_lr(base_lr: float, batch_size: int, base_batch_size: int) -> float:
    """Goyal et al.'s linear scaling rule: lr grows with the batch size."""
    return float(base_lr) * int(batch_size) / int(base_batch_size)


def auto_precision(accelerator: str = "cpu") -> str:
    """``${auto_precision:${trainer.accelerator}}``: bf16-mixed where the hardware has native
    bf16, else 32-true (normapps.platform.hardware.training_precision)."""
    from normapps.platform.hardware import training_precision

    return training_precision(accelerator)


def if_set(value, then, otherwise):
    """``${if_set:${key},a,b}``: ``a`` when ``key`` is set (not null or empty), else ``b`` - so a
    choice that follows another option is made in the config itself, and config.yaml shows it
    (no runner rewrites the config after it is written)."""
    return then if value not in (None, "") else otherwise


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("linear_lr"):
        OmegaConf.register_new_resolver("linear_lr", linear_scaled_lr)
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", auto_precision)
    if not OmegaConf.has_resolver("if_set"):
        OmegaConf.register_new_resolver("if_set", if_set)
