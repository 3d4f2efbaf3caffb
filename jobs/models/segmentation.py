"""Segmentation / image-to-image networks of the catalog: SPADE, ICNet, PSPNet, DeepLab-v2.

Each builder takes the per-sample input and output shapes of the full-size
sub-test and returns an uncompiled Keras model with random weights. The
layouts follow the implementations the original TF-1 graphs were exported
from (taki0112/SPADE-Tensorflow, hellochick ICNet / PSPNet, DrSleep
tensorflow-deeplab-resnet); parameter counts match the graphs exactly (see
docs/catalog-segmentation-sequence.md). Backend-neutral (keras.ops only): the
TF-1 resize, the in-graph latent noise and the spectral norm are written here
with the originals' semantics.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


# --------------------------------------------------------------------------- shared pieces

def _resize_indices(in_size: int, out_size: int, align_corners: bool, method: str):
    """Source rows (or columns) of TF-1's legacy resize, as NumPy arrays.

    tf.compat.v1.image.resize_{bilinear,nearest_neighbor}: scale = in/out, or (in-1)/(out-1)
    with align_corners; the source coordinate is dst * scale (no half-pixel offset). Nearest
    rounds with align_corners and floors without; bilinear interpolates between floor and
    floor + 1 (clamped) with weight frac.
    """
    scale = (in_size - 1) / (out_size - 1) if align_corners and out_size > 1 else in_size / out_size
    # TF computes the coordinate in float32; so do we, for the same floors at exact multiples.
    src = np.arange(out_size, dtype=np.float32) * np.float32(scale)
    if method == "nearest":
        index = np.floor(src + 0.5) if align_corners else np.floor(src)  # C roundf for src >= 0
        return np.minimum(index, in_size - 1).astype(np.int32), None, None
    low = np.floor(src)
    frac = (src - low).astype(np.float32)
    low = low.astype(np.int32)
    return low, np.minimum(low + 1, in_size - 1).astype(np.int32), frac


class Resize(layers.Layer):
    """TF-1 style image resize to a fixed size (`tf.compat.v1.image.resize_*` semantics).

    The original graphs use the v1 ops (align_corners for the Caffe ports,
    plain v1 bilinear/nearest for SPADE), which keras.layers.Resizing cannot
    express. Written with gathers (keras.ops.take), one axis after the other,
    so it runs on every backend and costs what the original op costs.
    """

    def __init__(self, size, method="bilinear", align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(int(s) for s in size)
        self.method = method
        self.align_corners = align_corners

    def _axis(self, x, axis: int, out_size: int):
        low, high, frac = _resize_indices(int(x.shape[axis]), out_size, self.align_corners, self.method)
        if high is None:
            return ops.take(x, low, axis=axis)
        a, b = ops.take(x, low, axis=axis), ops.take(x, high, axis=axis)
        shape = [1, 1, 1, 1]
        shape[axis] = out_size
        weight = ops.cast(ops.reshape(ops.convert_to_tensor(frac), shape), x.dtype)
        return a + (b - a) * weight

    def call(self, x):
        return self._axis(self._axis(x, 1, self.size[0]), 2, self.size[1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "method": self.method,
                "align_corners": self.align_corners}


def _hw(x) -> tuple:
    return int(x.shape[1]), int(x.shape[2])


def _pool_kernels(h: int, w: int, bins: tuple, caps: tuple | None = None) -> list:
    """Pyramid-pooling kernel (= stride) per bin, per spatial dimension.

    kernel = feature_size // bin (at least 1), optionally capped by the fixed
    kernel of the original graph. At the full-size input this reproduces the
    original kernels exactly; for smaller (test) inputs it degrades gracefully
    instead of failing on a kernel larger than the feature map.
    """
    out = []
    for i, b in enumerate(bins):
        kh, kw = max(1, h // b), max(1, w // b)
        if caps is not None:
            kh, kw = min(kh, caps[i]), min(kw, caps[i])
        out.append((kh, kw))
    return out


# --------------------------------------------------------------------------- dilated ResNets

def _conv_bn(x, filters, kernel, name, stride=1, dilation=1, relu=True, pad=None, bn_name=None):
    """conv (no bias) + frozen-style BatchNorm (+ ReLU), Caffe layout.

    `pad` reproduces the explicit zero padding + VALID conv of the Caffe
    ports; without it the conv uses SAME padding.
    """
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation,
                      padding="valid" if pad or kernel == 1 else "same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=1e-5, name=bn_name or f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _bottleneck_psp(x, mid, out, stride, dilation, name, project):
    """PSPNet (hellochick/Caffe) bottleneck: stride on the 1x1 reduce, dilated 3x3."""
    shortcut = _conv_bn(x, out, 1, f"{name}_1x1_proj", stride=stride, relu=False) if project else x
    y = _conv_bn(x, mid, 1, f"{name}_1x1_reduce", stride=stride)
    y = _conv_bn(y, mid, 3, f"{name}_3x3", dilation=dilation, pad=dilation)
    y = _conv_bn(y, out, 1, f"{name}_1x1_increase", relu=False)
    y = layers.Add(name=name)([shortcut, y])
    return layers.ReLU(name=f"{name}_relu")(y)


def _bottleneck_caffe(x, mid, out, stride, dilation, name, project):
    """DeepLab-v2 (Caffe ResNet-101 naming) bottleneck: stride on branch2a."""
    bn = "bn" + name[3:]
    if project:
        shortcut = _conv_bn(x, out, 1, f"{name}_branch1", stride=stride, relu=False,
                            bn_name=f"{bn}_branch1")
    else:
        shortcut = x
    y = _conv_bn(x, mid, 1, f"{name}_branch2a", stride=stride, bn_name=f"{bn}_branch2a")
    y = _conv_bn(y, mid, 3, f"{name}_branch2b", dilation=dilation, bn_name=f"{bn}_branch2b")
    y = _conv_bn(y, out, 1, f"{name}_branch2c", relu=False, bn_name=f"{bn}_branch2c")
    y = layers.Add(name=name)([shortcut, y])
    return layers.ReLU(name=f"{name}_relu")(y)


# --------------------------------------------------------------------------- PSPNet

# Pyramid pooling of the original graph: kernels fixed at 60/30/20/10 (PSPNet-50
# built for 473x473 inputs, i.e. a 60x60 feature map), whatever the input size.
PSP_BINS = (1, 2, 3, 6)
PSP_KERNELS = (60, 30, 20, 10)


def pspnet(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """PSPNet-50: deep-stem dilated ResNet-50 (output stride 8) + pyramid pooling.

    Output = input / 8 with 3 channels (720 -> 90, 512 -> 64), no upsampling.
    """
    inp = keras.Input(input_shape)
    x = _conv_bn(inp, 64, 3, "conv1_1_3x3_s2", stride=2)
    x = _conv_bn(x, 64, 3, "conv1_2_3x3")
    x = _conv_bn(x, 128, 3, "conv1_3_3x3")
    x = layers.ZeroPadding2D(1, name="padding0")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1_3x3_s2")(x)
    # (blocks, mid, out, first stride, dilation) per stage
    for stage, (n, mid, out, stride, dil) in enumerate(
            [(3, 64, 256, 1, 1), (4, 128, 512, 2, 1), (6, 256, 1024, 1, 2), (3, 512, 2048, 1, 4)], start=2):
        for i in range(n):
            x = _bottleneck_psp(x, mid, out, stride if i == 0 else 1, dil, f"conv{stage}_{i + 1}", i == 0)

    h, w = _hw(x)
    branches = [x]
    for b, (kh, kw) in zip(PSP_BINS, _pool_kernels(h, w, PSP_BINS, PSP_KERNELS)):
        p = layers.AveragePooling2D((kh, kw), (kh, kw), name=f"conv5_3_pool{b}")(x)
        p = _conv_bn(p, 512, 1, f"conv5_3_pool{b}_conv")
        branches.append(Resize((h, w), align_corners=True, name=f"conv5_3_pool{b}_interp")(p))
    x = layers.Concatenate(name="conv5_3_concat")(branches)
    x = _conv_bn(x, 512, 3, "conv5_4")
    out = layers.Conv2D(output_shape[-1], 1, name="conv6")(x)
    return keras.Model(inp, out, name="pspnet")


# --------------------------------------------------------------------------- DeepLab-v2

def deeplab(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """DeepLab-v2: ResNet-101 (atrous 2/4, output stride 8) + 4-branch ASPP, summed."""
    inp = keras.Input(input_shape)
    x = _conv_bn(inp, 64, 7, "conv1", stride=2, bn_name="bn_conv1")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    for stage, (n, mid, out, stride, dil) in enumerate(
            [(3, 64, 256, 1, 1), (4, 128, 512, 2, 1), (23, 256, 1024, 1, 2), (3, 512, 2048, 1, 4)], start=2):
        for i in range(n):
            # Caffe naming: res4a, res4b1..res4b22 for the deep stages, res2a..c otherwise.
            suffix = "a" if i == 0 else (f"b{i}" if n >= 4 else "abc"[i])
            x = _bottleneck_caffe(x, mid, out, stride if i == 0 else 1, dil, f"res{stage}{suffix}", i == 0)
    aspp = [layers.Conv2D(output_shape[-1], 3, padding="same", dilation_rate=r, name=f"fc1_voc12_c{i}")(x)
            for i, r in enumerate((6, 12, 18, 24))]
    out = layers.Add(name="fc1_voc12")(aspp)
    return keras.Model(inp, out, name="deeplab")


# --------------------------------------------------------------------------- ICNet

ICNET_BINS = (1, 2, 3, 6)


def icnet(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """ICNet (hellochick, no BatchNorm, biased convs) + a trainable 1x1 19->3 tanh head.

    Only `final` is trainable, as in the original graph: training updates 60
    parameters and back-propagates through that layer only. The input sides
    must be multiples of 32 (the three cascade branches are added together).
    """
    h, w = input_shape[0], input_shape[1]
    if h % 32 or w % 32:
        raise ValueError(f"ICNet needs input sides that are multiples of 32, got {input_shape}")

    def conv(x, filters, kernel, name, stride=1, dilation=1, relu=True, pad=0):
        if pad:
            x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        same = kernel > 1 and not pad  # the few SAME convs of the original (stride-2 3x3)
        return layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation,
                             padding="same" if same else "valid", activation="relu" if relu else None,
                             trainable=False, name=name)(x)

    def block(x, mid, out, name, stride=1, dilation=1, project=False):
        shortcut = conv(x, out, 1, f"{name}_1x1_proj", stride=stride, relu=False) if project else x
        y = conv(x, mid, 1, f"{name}_1x1_reduce", stride=stride)
        y = conv(y, mid, 3, f"{name}_3x3", dilation=dilation, pad=dilation)
        y = conv(y, out, 1, f"{name}_1x1_increase", relu=False)
        return layers.ReLU(name=f"{name}_relu")(layers.Add(name=name)([shortcut, y]))

    def interp(x, factor, name):
        fh, fw = _hw(x)
        return Resize((int(fh * factor), int(fw * factor)), align_corners=True, name=name)(x)

    inp = keras.Input(input_shape)
    # 1/2-resolution branch, shared up to conv3_1
    x = interp(inp, 0.5, "data_sub2")
    x = conv(x, 32, 3, "conv1_1_3x3_s2", stride=2)
    x = conv(x, 32, 3, "conv1_2_3x3")
    x = conv(x, 64, 3, "conv1_3_3x3")
    x = layers.ZeroPadding2D(1, name="padding0")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1_3x3_s2")(x)
    for i in range(3):
        x = block(x, 32, 128, f"conv2_{i + 1}", project=i == 0)
    conv3_1 = block(x, 64, 256, "conv3_1", stride=2, project=True)
    # 1/4-resolution branch: the rest of the dilated ResNet-50 (half width)
    x = interp(conv3_1, 0.5, "conv3_1_sub4")
    for i in range(1, 4):
        x = block(x, 64, 256, f"conv3_{i + 1}")
    for i in range(6):
        x = block(x, 128, 512, f"conv4_{i + 1}", dilation=2, project=i == 0)
    for i in range(3):
        x = block(x, 256, 1024, f"conv5_{i + 1}", dilation=4, project=i == 0)
    fh, fw = _hw(x)
    pooled = [x]
    for b, (kh, kw) in zip(ICNET_BINS, _pool_kernels(fh, fw, ICNET_BINS)):
        p = layers.AveragePooling2D((kh, kw), (kh, kw), name=f"conv5_3_pool{b}")(x)
        pooled.append(Resize((fh, fw), align_corners=True, name=f"conv5_3_pool{b}_interp")(p))
    x = layers.Add(name="conv5_3_sum")(pooled)
    x = conv(x, 256, 1, "conv5_4_k1")
    x = interp(x, 2, "conv5_4_interp")
    x = conv(x, 128, 3, "conv_sub4", dilation=2, pad=2, relu=False)
    y = conv(conv3_1, 128, 1, "conv3_1_sub2_proj", relu=False)
    x = layers.ReLU(name="sub24_sum_relu")(layers.Add(name="sub24_sum")([x, y]))
    x = interp(x, 2, "sub24_sum_interp")
    x = conv(x, 128, 3, "conv_sub2", dilation=2, pad=2, relu=False)
    # full-resolution branch
    y = conv(inp, 32, 3, "conv1_sub1", stride=2)
    y = conv(y, 32, 3, "conv2_sub1", stride=2)
    y = conv(y, 64, 3, "conv3_sub1", stride=2)
    y = conv(y, 128, 1, "conv3_sub1_proj", relu=False)
    x = layers.ReLU(name="sub12_sum_relu")(layers.Add(name="sub12_sum")([x, y]))
    x = interp(x, 2, "sub12_sum_interp")
    x = conv(x, 19, 1, "conv6_cls", relu=False)  # Cityscapes classes
    # Logits upsampled to the input size (as hellochick's inference does), then
    # the graph's extra trainable head.
    x = Resize((h, w), align_corners=True, name="conv6_cls_up")(x)
    out = layers.Conv2D(output_shape[-1], 1, activation="tanh", name="final")(x)
    return keras.Model(inp, out, name="icnet")


# --------------------------------------------------------------------------- SPADE

class LatentNoise(layers.Layer):
    """z ~ N(0, 1), drawn fresh at every call, one row per sample of the input.

    The draw uses a SeedGenerator, whose state advances at every call, so a
    compiled step (tf.function, jax.jit of the stateless step) resamples too,
    as the original graph's RandomStandardNormal does. Its state is not a
    weight: it is not counted among the parameters.
    """

    def __init__(self, dim, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.seed = dim, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x):
        return keras.random.normal((ops.shape(x)[0], self.dim), dtype=self.compute_dtype,
                                   seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "seed": self.seed}


def _l2_normalize(x):
    """tf.math.l2_normalize over the last axis: x / sqrt(max(sum(x²), 1e-12))."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


class SNConv2D(layers.Layer):
    """Conv2D whose kernel is divided by its spectral norm (taki0112 `spectral_norm`).

    One power iteration per call with a non-trainable `u` of shape (1, filters),
    updated on every forward pass (inference too, as in the original graph).
    keras.layers.SpectralNormalization differs: it updates only when
    training=True and overwrites the kernel.
    """

    def __init__(self, filters, kernel_size, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.use_bias = filters, kernel_size, use_bias

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, input_shape[-1], self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") \
            if self.use_bias else None
        self.u = self.add_weight(name="u", shape=(1, self.filters), initializer="random_normal",
                                 trainable=False)

    def call(self, x):
        # power iteration in the variables' dtype (float32), conv in the compute dtype
        w = ops.reshape(self.kernel.value, (-1, self.filters))
        u = self.u.value
        v_hat = ops.stop_gradient(_l2_normalize(ops.matmul(u, ops.transpose(w))))
        u_hat = ops.stop_gradient(_l2_normalize(ops.matmul(v_hat, w)))
        sigma = ops.matmul(ops.matmul(v_hat, w), ops.transpose(u_hat))
        self.u.assign(u_hat)
        kernel = ops.cast(ops.reshape(w / sigma, self.kernel.shape), x.dtype)
        y = ops.conv(x, kernel, strides=1, padding="same")  # taki0112 pads (k-1)/2 zeros, then VALID
        return y + ops.cast(self.bias, x.dtype) if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "use_bias": self.use_bias}


class ParamFreeNorm(layers.Layer):
    """Instance normalisation without affine parameters (moments over H, W)."""

    def call(self, x):
        x32 = ops.cast(x, "float32")  # moments in float32 under mixed precision
        mean, var = ops.moments(x32, axes=[1, 2], keepdims=True)
        return ops.cast((x32 - mean) / ops.sqrt(var + 1e-5), x.dtype)


SPADE_CH = 64          # taki0112 `ch`
SPADE_Z = SPADE_CH * 4  # latent size 256
SPADE_UPSAMPLINGS = 6  # num_upsampling_layers='more': 2x2 -> 128x128


def _spade(segmap, x, channels, name):
    """SPADE: param-free norm of x, modulated by convs of the resized input map."""
    h, w = _hw(x)
    sh, sw = _hw(segmap)
    seg = Resize((sh // (sh // h), sw // (sw // w)), method="nearest", name=f"{name}_seg")(segmap)
    seg = layers.Conv2D(128, 5, padding="same", activation="relu", name=f"{name}_conv_128")(seg)
    gamma = layers.Conv2D(channels, 5, padding="same", name=f"{name}_conv_gamma")(seg)
    beta = layers.Conv2D(channels, 5, padding="same", name=f"{name}_conv_beta")(seg)
    x = ParamFreeNorm(name=f"{name}_norm")(x)
    # x * (1 + gamma) + beta
    return layers.Add(name=f"{name}_mod")([x, layers.Multiply()([x, gamma]), beta])


def _spade_resblock(segmap, x, channels, name):
    cin = int(x.shape[-1])
    mid = min(cin, channels)
    y = _spade(segmap, x, cin, f"{name}_spade_1")
    y = SNConv2D(mid, 3, name=f"{name}_conv_1")(layers.LeakyReLU(0.2)(y))
    y = _spade(segmap, y, mid, f"{name}_spade_2")
    y = SNConv2D(channels, 3, name=f"{name}_conv_2")(layers.LeakyReLU(0.2)(y))
    if cin != channels:
        x = _spade(segmap, x, cin, f"{name}_spade_shortcut")
        x = SNConv2D(channels, 1, use_bias=False, name=f"{name}_conv_shortcut")(x)
    return layers.Add(name=name)([y, x])


def _up(x, name):
    h, w = _hw(x)
    return Resize((2 * h, 2 * w), name=name)(x)  # v1 bilinear, align_corners=False


def spade(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """Nvidia-SPADE generator (taki0112 layout, ch=64, 'more' upsampling, spectral norm).

    The input image is the semantic map; z is sampled inside the model. As in
    taki0112's code the latent grid is the input size / 64 (six x2
    upsamplings), so the output has the input's size. The original graph is
    fixed at 128x128 (a 2x2 grid); other multiples of 64 change the size of
    `linear_x` only, and serve for fast tests.
    """
    if input_shape[0] % 2 ** SPADE_UPSAMPLINGS or input_shape[1] % 2 ** SPADE_UPSAMPLINGS:
        raise ValueError(f"SPADE needs input sides that are multiples of 64, got {input_shape}")
    inp = keras.Input(input_shape)
    zh, zw = input_shape[0] // 2 ** SPADE_UPSAMPLINGS, input_shape[1] // 2 ** SPADE_UPSAMPLINGS
    channels = SPADE_CH * 16
    z = LatentNoise(SPADE_Z, name="z")(inp)
    x = layers.Dense(zh * zw * channels, name="linear_x")(z)
    x = layers.Reshape((zh, zw, channels))(x)
    x = _spade_resblock(inp, x, channels, "spade_resblock_fix_0")
    x = _spade_resblock(inp, _up(x, "up_fix_1"), channels, "spade_resblock_fix_1")
    x = _spade_resblock(inp, _up(x, "up_fix_2"), channels, "spade_resblock_fix_2")
    for i in range(4):
        channels //= 2
        x = _spade_resblock(inp, _up(x, f"up_{i}"), channels, f"spade_resblock_{i}")
    x = layers.LeakyReLU(0.2)(x)
    out = layers.Conv2D(output_shape[-1], 3, padding="same", activation="tanh", name="logit")(x)
    return keras.Model(inp, out, name="spade")
