"""Classification networks of the catalog, from `keras.applications` (Inception-V4 written here).

Each builder takes the per-sample input and output shapes (the output is the
class count) and returns an uncompiled Keras model with random weights
(nothing is downloaded: `weights=None`). With the original class counts the parameter counts match
the original TF-slim graphs exactly, the Inception AuxLogits heads included (see docs/catalog.md
and docs/catalog-classification-image.md).
"""
from __future__ import annotations

import keras


def mobilenet_v2(input_shape: tuple, output_shape: tuple) -> keras.Model:
    return keras.applications.MobileNetV2(
        input_shape=input_shape, weights=None, classes=output_shape[0], alpha=1.0)


def resnet_v2_50(input_shape: tuple, output_shape: tuple) -> keras.Model:
    return keras.applications.ResNet50V2(input_shape=input_shape, weights=None, classes=output_shape[0])


def resnet_v2_152(input_shape: tuple, output_shape: tuple) -> keras.Model:
    return keras.applications.ResNet152V2(input_shape=input_shape, weights=None, classes=output_shape[0])


def vgg_16(input_shape: tuple, output_shape: tuple) -> keras.Model:
    return keras.applications.VGG16(input_shape=input_shape, weights=None, classes=output_shape[0])


# --- Inception family: TF-slim layout with the AuxLogits head -------------------------------
#
# The original graphs hold an AuxLogits head that neither phase evaluates: the loss and the
# inference fetch use only the main output. To count its parameters without computing it, the
# head is a separate functional model on the feature map it reads, tracked as the attribute
# `aux_logits` of the main model: its variables are in `model.weights` and `count_params()`,
# `model(x)` returns only the main output, and the training step gets no gradient for it.

def _conv_bn(x, filters, kernel, strides=1, padding="same", name=None):
    """TF-slim inception conv: no bias, BatchNorm without scale (gamma), ReLU."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                            name=None if name is None else f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(scale=False, epsilon=1e-3, momentum=0.9997,
                                        name=None if name is None else f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=name)(x)


def _aux_logits_head(channels: int, classes: int, name: str, conv_logits: bool) -> keras.Model:
    """TF-slim AuxLogits: avg-pool 5/3, 1x1 conv 128, 5x5 conv 768 (VALID), then the logits.

    The 5x5 kernel is what slim uses at the benchmark's 346² input (its feature map is 19²,
    pooled to 5²). InceptionV3 ends with a 1x1 conv (`Conv2d_2b_1x1`), V4 and Inception-ResNet-V2
    with a fully connected layer; both have the same parameters.
    """
    inp = keras.Input((None, None, channels), name=f"{name}_input")
    x = keras.layers.AveragePooling2D(5, strides=3, padding="valid", name=f"{name}_pool")(inp)
    x = _conv_bn(x, 128, 1, name=f"{name}_conv2d_1b_1x1")
    x = _conv_bn(x, 768, 5, padding="valid", name=f"{name}_conv2d_2a_5x5")
    # The head's input size is left free, so slim's flatten/squeeze of the 1x1 map is a reshape.
    if conv_logits:
        x = keras.layers.Conv2D(classes, 1, name=f"{name}_conv2d_2b_1x1")(x)
        x = keras.layers.Reshape((classes,), name=f"{name}_squeeze")(x)
    else:
        x = keras.layers.Reshape((768,), name=f"{name}_flatten")(x)
        x = keras.layers.Dense(classes, name=f"{name}_logits")(x)
    return keras.Model(inp, x, name=name)


def _attach_aux_head(model: keras.Model, source_layer: str, classes: int,
                     conv_logits: bool) -> keras.Model:
    channels = model.get_layer(source_layer).output.shape[-1]
    # Setting the attribute makes Keras track the head's variables in `model`.
    model.aux_logits = _aux_logits_head(channels, classes, "aux_logits", conv_logits)
    model.aux_logits_source = source_layer  # the feature map the original head reads
    return model


def inception_v3(input_shape: tuple, output_shape: tuple) -> keras.Model:
    classes = output_shape[0]
    model = keras.applications.InceptionV3(input_shape=input_shape, weights=None, classes=classes)
    return _attach_aux_head(model, "mixed7", classes, conv_logits=True)  # mixed7 = slim Mixed_6e


def inception_resnet_v2(input_shape: tuple, output_shape: tuple) -> keras.Model:
    classes = output_shape[0]
    model = keras.applications.InceptionResNetV2(input_shape=input_shape, weights=None, classes=classes)
    # block17_20_ac = slim PreAuxLogits, the output of the last 17x17 block.
    return _attach_aux_head(model, "block17_20_ac", classes, conv_logits=False)


def _concat(name, *branches):
    return keras.layers.Concatenate(axis=-1, name=name)(list(branches))


def _inception_v4_a(x, name):
    b0 = _conv_bn(x, 96, 1, name=f"{name}_b0_1x1")
    b1 = _conv_bn(x, 64, 1, name=f"{name}_b1_1x1")
    b1 = _conv_bn(b1, 96, 3, name=f"{name}_b1_3x3")
    b2 = _conv_bn(x, 64, 1, name=f"{name}_b2_1x1")
    b2 = _conv_bn(b2, 96, 3, name=f"{name}_b2_3x3a")
    b2 = _conv_bn(b2, 96, 3, name=f"{name}_b2_3x3b")
    b3 = keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    b3 = _conv_bn(b3, 96, 1, name=f"{name}_b3_1x1")
    return _concat(name, b0, b1, b2, b3)


def _inception_v4_reduction_a(x, name):
    b0 = _conv_bn(x, 384, 3, strides=2, padding="valid", name=f"{name}_b0_3x3")
    b1 = _conv_bn(x, 192, 1, name=f"{name}_b1_1x1")
    b1 = _conv_bn(b1, 224, 3, name=f"{name}_b1_3x3a")
    b1 = _conv_bn(b1, 256, 3, strides=2, padding="valid", name=f"{name}_b1_3x3b")
    b2 = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_b2_pool")(x)
    return _concat(name, b0, b1, b2)


def _inception_v4_b(x, name):
    b0 = _conv_bn(x, 384, 1, name=f"{name}_b0_1x1")
    b1 = _conv_bn(x, 192, 1, name=f"{name}_b1_1x1")
    b1 = _conv_bn(b1, 224, (1, 7), name=f"{name}_b1_1x7")
    b1 = _conv_bn(b1, 256, (7, 1), name=f"{name}_b1_7x1")
    b2 = _conv_bn(x, 192, 1, name=f"{name}_b2_1x1")
    b2 = _conv_bn(b2, 192, (7, 1), name=f"{name}_b2_7x1a")
    b2 = _conv_bn(b2, 224, (1, 7), name=f"{name}_b2_1x7a")
    b2 = _conv_bn(b2, 224, (7, 1), name=f"{name}_b2_7x1b")
    b2 = _conv_bn(b2, 256, (1, 7), name=f"{name}_b2_1x7b")
    b3 = keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    b3 = _conv_bn(b3, 128, 1, name=f"{name}_b3_1x1")
    return _concat(name, b0, b1, b2, b3)


def _inception_v4_reduction_b(x, name):
    b0 = _conv_bn(x, 192, 1, name=f"{name}_b0_1x1")
    b0 = _conv_bn(b0, 192, 3, strides=2, padding="valid", name=f"{name}_b0_3x3")
    b1 = _conv_bn(x, 256, 1, name=f"{name}_b1_1x1")
    b1 = _conv_bn(b1, 256, (1, 7), name=f"{name}_b1_1x7")
    b1 = _conv_bn(b1, 320, (7, 1), name=f"{name}_b1_7x1")
    b1 = _conv_bn(b1, 320, 3, strides=2, padding="valid", name=f"{name}_b1_3x3")
    b2 = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_b2_pool")(x)
    return _concat(name, b0, b1, b2)


def _inception_v4_c(x, name):
    b0 = _conv_bn(x, 256, 1, name=f"{name}_b0_1x1")
    b1 = _conv_bn(x, 384, 1, name=f"{name}_b1_1x1")
    b1 = _concat(f"{name}_b1", _conv_bn(b1, 256, (1, 3), name=f"{name}_b1_1x3"),
                 _conv_bn(b1, 256, (3, 1), name=f"{name}_b1_3x1"))
    b2 = _conv_bn(x, 384, 1, name=f"{name}_b2_1x1")
    b2 = _conv_bn(b2, 448, (3, 1), name=f"{name}_b2_3x1a")
    b2 = _conv_bn(b2, 512, (1, 3), name=f"{name}_b2_1x3a")
    b2 = _concat(f"{name}_b2", _conv_bn(b2, 256, (1, 3), name=f"{name}_b2_1x3b"),
                 _conv_bn(b2, 256, (3, 1), name=f"{name}_b2_3x1b"))
    b3 = keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    b3 = _conv_bn(b3, 256, 1, name=f"{name}_b3_1x1")
    return _concat(name, b0, b1, b2, b3)


def inception_v4(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """TF-slim `inception_v4` (Szegedy et al. 2016) with its AuxLogits head; no dropout.

    Layer names follow slim's scopes in lower case (mixed_5b ... mixed_7d). Minimum input 75².
    """
    classes = output_shape[0]
    inp = keras.Input(input_shape, name="input")
    x = _conv_bn(inp, 32, 3, strides=2, padding="valid", name="conv2d_1a_3x3")
    x = _conv_bn(x, 32, 3, padding="valid", name="conv2d_2a_3x3")
    x = _conv_bn(x, 64, 3, name="conv2d_2b_3x3")
    x = _concat("mixed_3a",
                keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="mixed_3a_pool")(x),
                _conv_bn(x, 96, 3, strides=2, padding="valid", name="mixed_3a_3x3"))
    b0 = _conv_bn(x, 64, 1, name="mixed_4a_b0_1x1")
    b0 = _conv_bn(b0, 96, 3, padding="valid", name="mixed_4a_b0_3x3")
    b1 = _conv_bn(x, 64, 1, name="mixed_4a_b1_1x1")
    b1 = _conv_bn(b1, 64, (1, 7), name="mixed_4a_b1_1x7")
    b1 = _conv_bn(b1, 64, (7, 1), name="mixed_4a_b1_7x1")
    b1 = _conv_bn(b1, 96, 3, padding="valid", name="mixed_4a_b1_3x3")
    x = _concat("mixed_4a", b0, b1)
    x = _concat("mixed_5a", _conv_bn(x, 192, 3, strides=2, padding="valid", name="mixed_5a_3x3"),
                keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="mixed_5a_pool")(x))
    for suffix in "bcde":
        x = _inception_v4_a(x, f"mixed_5{suffix}")
    x = _inception_v4_reduction_a(x, "mixed_6a")
    for suffix in "bcdefgh":
        x = _inception_v4_b(x, f"mixed_6{suffix}")
    x = _inception_v4_reduction_b(x, "mixed_7a")
    for suffix in "bcd":
        x = _inception_v4_c(x, f"mixed_7{suffix}")
    # slim pools with a VALID kernel the size of the map: the same as global average pooling.
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # Softmax like the keras.applications builders of this module.
    x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, x, name="inception_v4")
    return _attach_aux_head(model, "mixed_6h", classes, conv_logits=False)
