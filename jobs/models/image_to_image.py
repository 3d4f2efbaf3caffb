"""Image-to-image networks of the catalog (enhancement tests 8-11, U-Net test 12).

None of them is in `keras.applications`; each is written here after the original graph's
layout and parameter counts (docs/catalog-classification-image.md). Every network is fully
convolutional: the output has the input's height and width and 3 channels. Inputs are raw
pixels in 0-255, as the benchmark feeds them, and outputs are mapped back to that range.
"""
from __future__ import annotations

import keras
from keras import ops

_PACKAGE = "benchmark_tracker"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScalarBias(keras.layers.Layer):
    """Adds one trainable scalar to every element (SRCNN's last bias is a single value)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, x):
        return x + self.bias


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InstanceNorm(keras.layers.Layer):
    """DPED's `_instance_norm`: per-sample, per-channel moments over H and W, computed in the
    graph, then a trainable per-channel scale and shift (no moving statistics)."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.scale = self.add_weight(shape=(channels,), initializer="ones", name="scale")
        self.shift = self.add_weight(shape=(channels,), initializer="zeros", name="shift")

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        variance = ops.var(x, axis=(1, 2), keepdims=True)
        return self.scale * (x - mean) / ops.sqrt(variance + self.epsilon) + self.shift

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel upsampling (TensorLayer's SubpixelConv2d without its activation)."""

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        # tf.nn.depth_to_space (NHWC, DCR order): channel block (i, j, c) goes to pixel (i, j).
        s = self.scale
        b, h, w, c = ops.shape(x)
        x = ops.reshape(x, (b, h, w, s, s, c // (s * s)))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (b, h * s, w * s, c // (s * s)))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.scale
        return (b, None if h is None else h * s, None if w is None else w * s, c // (s * s))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _conv(x, filters, kernel, activation=None, name=None, **kwargs):
    return keras.layers.Conv2D(filters, kernel, padding="same", activation=activation,
                               name=name, **kwargs)(x)


def srcnn(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """SRCNN 9-5-5 (Dong et al. 2014): 9x9 3->64, 5x5 64->32, 5x5 32->3; 69,249 parameters.

    SAME padding and no upscaling (output size = input size, as in the graph). The last conv
    has one scalar bias shared by the 3 channels; its tanh output is mapped to 0-255.
    """
    inp = keras.Input(input_shape, name="input")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit")(inp)
    x = _conv(x, 64, 9, "relu", name="conv1")
    x = _conv(x, 32, 5, "relu", name="conv2")
    x = _conv(x, 3, 5, name="conv3", use_bias=False)
    x = ScalarBias(name="conv3_bias")(x)
    x = keras.layers.Activation("tanh", name="tanh")(x)
    x = keras.layers.Rescaling(127.5, offset=127.5, name="to_pixels")(x)
    return keras.Model(inp, x, name="srcnn")


def vgg19_super_res(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """The benchmark's "VGG-19" test: a VDSR-style net (Kim et al. 2016), not the classifier.

    20 convs of 3x3 at 64 channels with ReLU (the last to 3 channels, linear), no pooling or
    stride, and a global residual: output = (stack(x/255) + x/255) * 255. 668,227 parameters.
    """
    inp = keras.Input(input_shape, name="input")
    unit = keras.layers.Rescaling(1.0 / 255.0, name="to_unit")(inp)
    x = unit
    for i in range(1, 20):
        x = _conv(x, 64, 3, "relu", name=f"conv{i}")
    x = _conv(x, 3, 3, name="conv20")
    x = keras.layers.Add(name="global_residual")([x, unit])
    x = keras.layers.Rescaling(255.0, name="to_pixels")(x)
    return keras.Model(inp, x, name="vgg19_super_res")


def srgan(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """SRGAN generator (Ledig et al. 2017, TensorLayer `SRGAN_g` layout) made size-preserving.

    A 7x7 stride-4 conv first brings the image to 1/4 size; then the TensorLayer generator:
    3x3 conv, 16 residual blocks (conv-BN-ReLU-conv-BN + skip, convs without bias), a middle
    conv-BN with the long skip, two (3x3 conv 256, pixel shuffle x2, ReLU) stages and a 1x1
    conv to 3 channels with tanh. H and W must be multiples of 4.

    BatchNorm is frozen: the graph's 33 BN layers hold gamma, beta and moving statistics all
    outside the trainable set, which is how TensorLayer builds BatchNormLayer with
    is_train=False (normalise with the moving statistics). Keras' BatchNormalization with
    trainable=False does the same. Input is mapped to [-1, 1] and the tanh output back to 0-255,
    TensorLayer SRGAN's convention.
    """
    w_init = keras.initializers.RandomNormal(stddev=0.02)

    def bn(x, name, activation=None):
        x = keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.9, gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02),
            trainable=False, name=name)(x)
        return x if activation is None else keras.layers.Activation(activation, name=f"{name}_relu")(x)

    inp = keras.Input(input_shape, name="input")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_signed_unit")(inp)
    x = keras.layers.Conv2D(64, 7, strides=4, padding="same", activation="relu",
                            kernel_initializer=w_init, name="n64s4_c")(x)
    x = _conv(x, 64, 3, "relu", name="n64s1_c", kernel_initializer=w_init)
    skip = x
    for i in range(16):
        y = _conv(x, 64, 3, name=f"n64s1_c1_{i}", use_bias=False, kernel_initializer=w_init)
        y = bn(y, f"n64s1_b1_{i}", "relu")
        y = _conv(y, 64, 3, name=f"n64s1_c2_{i}", use_bias=False, kernel_initializer=w_init)
        y = bn(y, f"n64s1_b2_{i}")
        x = keras.layers.Add(name=f"b_residual_add_{i}")([x, y])
    x = _conv(x, 64, 3, name="n64s1_c_m", use_bias=False, kernel_initializer=w_init)
    x = bn(x, "n64s1_b_m")
    x = keras.layers.Add(name="add3")([x, skip])
    for i in (1, 2):
        x = _conv(x, 256, 3, name=f"n256s1_{i}", kernel_initializer=w_init)
        x = PixelShuffle(2, name=f"pixelshufflerx2_{i}")(x)
        x = keras.layers.Activation("relu", name=f"pixelshufflerx2_{i}_relu")(x)
    x = _conv(x, 3, 1, "tanh", name="out", kernel_initializer=w_init)
    x = keras.layers.Rescaling(127.5, offset=127.5, name="to_pixels")(x)
    return keras.Model(inp, x, name="srgan")


def dped(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """DPED generator (Ignatov et al. 2017, `models.resnet`): 12 convs, 401,475 parameters.

    9x9 conv 3->64 + ReLU; 4 residual blocks of two 3x3 convs, each followed by instance
    normalisation and ReLU, the block input added after the second; two 3x3 convs + ReLU; a 9x9
    conv to 3 channels with DPED's output mapping tanh(z)*0.58 + 0.5 on the 0-1 scale, taken to
    0-255. Input is divided by 255, DPED's convention.
    """
    inp = keras.Input(input_shape, name="input")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit")(inp)
    x = _conv(x, 64, 9, "relu", name="conv1")
    layer = 2
    for block in range(1, 5):
        y = x
        for half in (1, 2):
            y = _conv(y, 64, 3, name=f"conv{layer}")
            y = InstanceNorm(name=f"instance_norm{layer}")(y)
            y = keras.layers.Activation("relu", name=f"relu{layer}")(y)
            layer += 1
        x = keras.layers.Add(name=f"residual{block}")([y, x])
    x = _conv(x, 64, 3, "relu", name="conv10")
    x = _conv(x, 64, 3, "relu", name="conv11")
    x = _conv(x, 3, 9, "tanh", name="conv12")
    x = keras.layers.Rescaling(0.58 * 255.0, offset=0.5 * 255.0, name="to_pixels")(x)
    return keras.Model(inp, x, name="dped")


def unet(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """U-Net (Ronneberger et al. 2015) with SAME padding: 31,043,651 parameters.

    Encoder of 5 levels (64->1024 channels, two 3x3 convs each, 2x2 max-pool between), decoder of
    4 levels (2x2 stride-2 transposed conv halving the channels, concatenation with the encoder
    map, two 3x3 convs), then a 1x1 conv to 3 channels with tanh, mapped to 0-255. Every 3x3
    conv has a bias and is followed by a normalisation with moments computed in the graph
    (instance norm, per-channel scale and shift, no moving statistics) and ReLU.
    H and W must be multiples of 16.
    """
    def double_conv(x, filters, name):
        for i in (1, 2):
            x = _conv(x, filters, 3, name=f"{name}_conv{i}")
            x = InstanceNorm(name=f"{name}_norm{i}")(x)
            x = keras.layers.Activation("relu", name=f"{name}_relu{i}")(x)
        return x

    inp = keras.Input(input_shape, name="input")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit")(inp)
    skips = []
    for level, filters in enumerate((64, 128, 256, 512)):
        x = double_conv(x, filters, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = double_conv(x, 1024, "bottom")
    for level, filters in reversed(list(enumerate((64, 128, 256, 512)))):
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}_deconv")(x)
        x = keras.layers.Concatenate(name=f"up{level}_concat")([skips[level], x])
        x = double_conv(x, filters, f"up{level}")
    x = _conv(x, 3, 1, "tanh", name="out")
    x = keras.layers.Rescaling(127.5, offset=127.5, name="to_pixels")(x)
    return keras.Model(inp, x, name="unet")
