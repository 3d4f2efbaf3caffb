"""The AI Benchmark Alpha test catalog: tests, sub-tests and model builders.

Metadata (batches, shapes, reference parameter counts) comes from
`ai-benchmark` 0.1.2's config and graph files, as recorded in the project's
test-catalog notes. Importing this module imports neither Keras nor any
framework (Keras fixes its backend at import): the frontend uses it to
validate and expand sweeps.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

PHASES = ("inference", "training")


@dataclass(frozen=True)
class SubTest:
    id: str  # ai-benchmark's result key, e.g. "1.2"
    phase: str
    batch: int
    input_shape: tuple  # per sample
    output_shape: tuple  # per sample, as the network really produces it


@dataclass(frozen=True)
class Test:
    number: int
    name: str  # the slug used in sweep files
    title: str
    task: str  # ai-benchmark's test_type: decides data and targets
    subtests: tuple
    total_params: int  # of the original graph
    trainable_params: int
    builder: str | None = None  # "module:function" under jobs.models, None if not implemented
    tiny_input: tuple | None = None  # smallest per-sample input the model accepts, for tests

    @property
    def implemented(self) -> bool:
        return self.builder is not None

    def phases(self) -> tuple:
        return tuple(p for p in PHASES if any(s.phase == p for s in self.subtests))

    def subtests_for(self, phase: str) -> tuple:
        return tuple(s for s in self.subtests if s.phase == phase)

    def load_builder(self) -> Callable:
        if self.builder is None:
            raise NotImplementedError(f"test {self.name!r} has no model implementation yet")
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"jobs.models.{module}"), function)


def _img(h: int, w: int | None = None) -> tuple:
    return (h, w if w is not None else h, 3)


def _subs(number: int, rows: list) -> tuple:
    return tuple(SubTest(f"{number}.{i}", *row) for i, row in enumerate(rows, start=1))


# (phase, batch, input, output) per sub-test: inference sub-tests first, as in ai-benchmark.
_TESTS = [
    Test(1, "mobilenet_v2", "MobileNet-V2", "classification",
         _subs(1, [("inference", 50, _img(224), (1001,)), ("training", 50, _img(224), (1001,))]),
         3_540_265, 3_506_153, "classification:mobilenet_v2", _img(32)),
    Test(2, "inception_v3", "Inception-V3", "classification",
         _subs(2, [("inference", 20, _img(346), (1001,)), ("training", 20, _img(346), (1001,))]),
         27_182_194, 27_145_970, "classification:inception_v3", _img(75)),
    Test(3, "inception_v4", "Inception-V4", "classification",
         _subs(3, [("inference", 10, _img(346), (1001,)), ("training", 10, _img(346), (1001,))]),
         46_074_066, 46_009_106, "classification:inception_v4", _img(75)),
    Test(4, "inception_resnet_v2", "Inception-ResNet-V2", "classification",
         _subs(4, [("inference", 10, _img(346), (1001,)), ("training", 8, _img(346), (1001,))]),
         59_244_594, 59_182_258, "classification:inception_resnet_v2", _img(75)),
    Test(5, "resnet_v2_50", "ResNet-V2-50", "classification",
         _subs(5, [("inference", 10, _img(346), (1001,)), ("training", 10, _img(346), (1001,))]),
         25_615_849, 25_570_409, "classification:resnet_v2_50", _img(32)),
    Test(6, "resnet_v2_152", "ResNet-V2-152", "classification",
         _subs(6, [("inference", 10, _img(256), (1001,)), ("training", 10, _img(256), (1001,))]),
         60_382_697, 60_238_953, "classification:resnet_v2_152", _img(32)),
    Test(7, "vgg_16", "VGG-16", "classification",
         _subs(7, [("inference", 20, _img(224), (1000,)), ("training", 2, _img(224), (1000,))]),
         138_357_544, 138_357_544, "classification:vgg_16", _img(32)),
    Test(8, "srcnn", "SRCNN 9-5-5", "enhancement",
         _subs(8, [("inference", 10, _img(512), _img(512)), ("inference", 1, _img(1536), _img(1536)),
                   ("training", 10, _img(512), _img(512))]),
         69_249, 69_249, "image_to_image:srcnn", _img(16)),
    Test(9, "vgg19_super_res", "VGG-19 Super-Res", "enhancement",
         _subs(9, [("inference", 10, _img(256), _img(256)), ("inference", 1, _img(1024), _img(1024)),
                   ("training", 10, _img(224), _img(224))]),
         668_227, 668_227, "image_to_image:vgg19_super_res", _img(16)),
    Test(10, "srgan", "ResNet-SRGAN", "enhancement",
         _subs(10, [("inference", 10, _img(512), _img(512)), ("inference", 1, _img(1536), _img(1536)),
                    ("training", 5, _img(512), _img(512))]),
         1_566_979, 1_558_531, "image_to_image:srgan", _img(16)),
    Test(11, "dped", "ResNet-DPED", "enhancement",
         _subs(11, [("inference", 10, _img(256), _img(256)), ("inference", 1, _img(1024), _img(1024)),
                    ("training", 15, _img(128), _img(128))]),
         401_475, 401_475, "image_to_image:dped", _img(16)),
    Test(12, "unet", "U-Net", "segmentation",
         _subs(12, [("inference", 4, _img(512), _img(512)), ("inference", 1, _img(1024), _img(1024)),
                    ("training", 4, _img(256), _img(256))]),
         31_043_651, 31_043_651, "image_to_image:unet", _img(16)),
    Test(13, "spade", "Nvidia-SPADE", "segmentation",
         _subs(13, [("inference", 5, _img(128), _img(128)), ("training", 1, _img(128), _img(128))]),
         138_029_827, 138_020_803, "segmentation:spade", _img(64, 128)),
    Test(14, "icnet", "ICNet", "segmentation",
         _subs(14, [("inference", 5, _img(1024, 1536), _img(1024, 1536)),
                    ("training", 10, _img(1024, 1536), _img(1024, 1536))]),
         6_685_775, 60, "segmentation:icnet", _img(32)),
    Test(15, "pspnet", "PSPNet", "segmentation",
         _subs(15, [("inference", 5, _img(720), _img(90)), ("training", 1, _img(512), _img(64))]),
         46_765_763, 46_707_139, "segmentation:pspnet", _img(8)),
    Test(16, "deeplab", "DeepLab", "segmentation",
         _subs(16, [("inference", 2, _img(512), _img(64)), ("training", 1, _img(384), _img(48))]),
         42_826_700, 42_721_356, "segmentation:deeplab", _img(8)),
    Test(17, "pixel_rnn", "Pixel-RNN", "enhancement",
         _subs(17, [("inference", 50, _img(64), _img(64)), ("training", 10, _img(64), _img(64))]),
         48_867, 48_867, "sequence:pixel_rnn", _img(4)),
    Test(18, "lstm", "LSTM-Sentiment", "nlp",
         _subs(18, [("inference", 100, (1024, 300), (2,)), ("training", 10, (1024, 300), (2,))]),
         5_429_250, 5_429_250, "sequence:lstm", (2, 300)),
    Test(19, "gnmt", "GNMT-Translation", "nlp-text",
         # 20 source token ids in, 22 greedy target ids out (the original: one string in,
         # a (tokens, 1) string tensor out; see docs/catalog-segmentation-sequence.md).
         _subs(19, [("inference", 1, (20,), (22,))]),
         281_798_657, 281_798_657, "sequence:gnmt", (1,)),
]

TESTS: dict = {t.name: t for t in _TESTS}


def get_test(name: str) -> Test:
    try:
        return TESTS[name]
    except KeyError:
        raise KeyError(f"unknown test {name!r}; valid tests: {', '.join(TESTS)}") from None


def built_params(test: Test) -> tuple:
    """(total, trainable) parameters of our model at the original size, by building it.

    Imports Keras: select the backend first (jobs.backends.select_backend).
    """
    import math

    import keras

    sub = test.subtests[0]
    model = test.load_builder()(sub.input_shape, sub.output_shape)
    total = model.count_params()
    trainable = sum(int(math.prod(v.shape)) for v in model.trainable_weights)
    del model
    keras.backend.clear_session()  # keep memory flat across the catalog's 19 models
    return total, trainable


def find_subtest(subtest_id: str) -> tuple:
    for test in _TESTS:
        for sub in test.subtests:
            if sub.id == subtest_id:
                return test, sub
    raise KeyError(f"unknown sub-test {subtest_id!r}")
