"""The classifier infers (classification, slimming, quantization) check their options into one
typed object before anything loads."""
import dataclasses

import pytest
from omegaconf import OmegaConf

from normapps.platform.predict import ImageInferOptions, image_infer_options


def _cfg(**kw):
    return OmegaConf.create({"ckpt_path": "m.ckpt", "input": "photos/", "batch_size": 8, **kw})


def test_options_are_typed_frozen_and_read_like_a_mapping():
    opts = image_infer_options(_cfg(image_size=28), ckpt_hint="a classifier")
    assert isinstance(opts, ImageInferOptions)
    assert (opts.ckpt_path, opts.input, opts.batch_size, opts.image_size) == ("m.ckpt", "photos/", 8, 28)
    assert opts["batch_size"] == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.batch_size = 2
    assert image_infer_options(_cfg(), ckpt_hint="x").image_size is None  # the task has no such key


@pytest.mark.parametrize("override, message", [
    ({"ckpt_path": None}, "ckpt_path is required: a classifier"),
    ({"input": None}, "input is required"),
    ({"batch_size": 0}, "batch_size"),
    ({"image_size": -3}, "image_size"),
])
def test_bad_options_are_refused_naming_the_option(override, message):
    with pytest.raises(ValueError, match=message):
        image_infer_options(_cfg(**override), ckpt_hint="a classifier")
