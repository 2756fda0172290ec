"""Graph preparation shared by the quantization backends: moved to :mod:`normapps.platform.int8`
(style transfer's int8 path uses it too); the name stays importable from here."""
from normapps.platform.int8 import unshare_modules

__all__ = ["unshare_modules"]
