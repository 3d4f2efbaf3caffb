"""Recurrent networks of the catalog: LSTM-Sentiment, Pixel-RNN, GNMT.

Each builder takes the per-sample input and output shapes of the full-size
sub-test and returns an uncompiled Keras model with random weights. The
recurrences are generic Keras RNN loops (`keras.layers.RNN(cell)`), not the
fused cuDNN LSTM kernel, because the originals ran generic loops
(`dynamic_rnn` / `keras.layers.RNN(LSTMCell)`) too. Parameter counts match the
original graphs exactly (see docs/catalog-segmentation-sequence.md).
Backend-neutral (keras.ops only).
"""
from __future__ import annotations

import numpy as np
import keras
from keras import layers, ops


# --------------------------------------------------------------------------- LSTM-Sentiment

def lstm(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """LSTM(1024) over (steps, 300) inputs, last output -> Dense(2) (ai-benchmark `LSTM_Sentiment`)."""
    inp = keras.Input(input_shape)
    x = layers.RNN(layers.LSTMCell(1024), name="lstm")(inp)  # returns the last output only
    out = layers.Dense(output_shape[-1], name="dense")(x)
    return keras.Model(inp, out, name="lstm_sentiment")


# --------------------------------------------------------------------------- Pixel-RNN

def _glorot():
    # ai-benchmark's VarianceScaling(1.0, fan_avg, uniform) is Glorot uniform.
    return keras.initializers.GlorotUniform()


class MaskedConv2D(layers.Layer):
    """PixelRNN masked convolution (ai-benchmark `model_utils.conv2d`), SAME padding, bias.

    The mask is spatial only: rows below the centre and pixels right of it are
    zeroed, and mask "a" also zeroes the centre. A 1x1 mask "b" is all ones.
    """

    def __init__(self, filters, kernel_size, mask_type, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.mask_type = filters, kernel_size, mask_type

    def build(self, input_shape):
        k = self.kernel_size
        shape = (k, k, input_shape[-1], self.filters)
        self.kernel = self.add_weight(name="weights", shape=shape, initializer=_glorot())
        self.bias = self.add_weight(name="biases", shape=(self.filters,), initializer="zeros")
        mask = np.ones(shape, dtype=np.float32)
        c = k // 2
        mask[c, c + 1:] = 0.0
        mask[c + 1:] = 0.0
        if self.mask_type == "a":
            mask[c, c] = 0.0
        self.mask = mask

    def call(self, x):
        kernel = ops.cast(self.kernel, x.dtype) * ops.convert_to_tensor(self.mask, x.dtype)
        return ops.conv(x, kernel, strides=1, padding="same") + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "mask_type": self.mask_type}


PIXEL_HIDDEN = 16


class DiagonalLSTMCell(layers.Layer):
    """ai-benchmark's DiagonalLSTMCell, one step = one skewed column of `height` pixels.

    State-to-state is a (2, 1) convolution over the column (TF SAME padding,
    i.e. each row sees itself and the row *below*), the four gates are all
    sigmoids of the flat (height * 4 * hidden) vector split into four
    contiguous chunks, and no forget bias is added: quirks of the original,
    kept as they are.
    """

    def __init__(self, height, hidden=PIXEL_HIDDEN, **kwargs):
        super().__init__(**kwargs)
        self.height, self.hidden = height, hidden
        n = height * hidden
        self.state_size = [n, n]  # (c, h), as the original's concat([c, h])
        self.output_size = n

    def build(self, input_shape):
        self.kernel = self.add_weight(name="s_to_s_weights", shape=(2, 1, self.hidden, 4 * self.hidden),
                                      initializer=_glorot())
        self.bias = self.add_weight(name="s_to_s_biases", shape=(4 * self.hidden,), initializer="zeros")

    def call(self, i_to_s, states, training=False):
        c_prev, h_prev = states
        col = ops.reshape(h_prev, (-1, self.height, 1, self.hidden))
        s_to_s = ops.conv(col, ops.cast(self.kernel, col.dtype), strides=1, padding="same")
        s_to_s = s_to_s + ops.cast(self.bias, col.dtype)
        s_to_s = ops.reshape(s_to_s, (-1, self.height * self.hidden * 4))
        i, g, f, o = ops.split(ops.sigmoid(s_to_s + i_to_s), 4, axis=1)
        c = f * c_prev + i * g
        h = o * ops.tanh(c)
        return h, [c, h]

    def get_config(self):
        return {**super().get_config(), "height": self.height, "hidden": self.hidden}


def _skew(x):
    """Shift row r right by r: (B, H, W, C) -> (B, H, W + H - 1, C), zero filled."""
    h = x.shape[1]
    return ops.stack([ops.pad(x[:, r], [[0, 0], [r, h - 1 - r], [0, 0]]) for r in range(h)], axis=1)


def _unskew(x, width):
    h = x.shape[1]
    return ops.stack([x[:, r, r:r + width] for r in range(h)], axis=1)


class DiagonalLSTM(layers.Layer):
    """One direction: skew, 1x1 input-to-state conv (4*hidden), column-wise RNN, unskew."""

    def __init__(self, height, hidden=PIXEL_HIDDEN, **kwargs):
        super().__init__(**kwargs)
        self.height, self.hidden = height, hidden
        self.i_to_s = MaskedConv2D(4 * hidden, 1, "b", name="i_to_s")
        self.rnn = layers.RNN(DiagonalLSTMCell(height, hidden, name="cell"), return_sequences=True,
                              name="rnn")

    def build(self, input_shape):
        b, h, w, c = input_shape
        self.i_to_s.build((b, h, w + h - 1, c))
        self.rnn.build((b, w + h - 1, h * 4 * self.hidden))

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        s = self.i_to_s(_skew(x))                                  # (B, H, W', 4h)
        cols = ops.transpose(s, [0, 2, 1, 3])                      # (B, W', H, 4h)
        out = self.rnn(ops.reshape(cols, (-1, w + h - 1, h * 4 * self.hidden)))
        out = ops.transpose(ops.reshape(out, (-1, w + h - 1, h, self.hidden)), [0, 2, 1, 3])
        return _unskew(out, w)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.hidden)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "hidden": self.hidden}


class DiagonalBiLSTM(layers.Layer):
    """Forward + (width-reversed) backward diagonal LSTM; the backward output's last row is zeroed."""

    def __init__(self, height, hidden=PIXEL_HIDDEN, **kwargs):
        super().__init__(**kwargs)
        self.height, self.hidden = height, hidden
        self.fw = DiagonalLSTM(height, hidden, name="output_state_fw")
        self.bw = DiagonalLSTM(height, hidden, name="output_state_bw")

    def build(self, input_shape):
        self.fw.build(input_shape)
        self.bw.build(input_shape)

    def call(self, x):
        fw = self.fw(x)
        bw = ops.flip(self.bw(ops.flip(x, axis=2)), axis=2)
        bw = ops.concatenate([bw[:, :-1], ops.zeros_like(bw[:, -1:])], axis=1)
        return fw + bw

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.hidden)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "hidden": self.hidden}


def pixel_rnn(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """Diagonal BiLSTM PixelRNN (ai-benchmark `models.PixelRNN`, from carpedm20/pixel-rnn-tensorflow).

    x/255 -> masked 7x7 conv "a" (16) -> 7 diagonal BiLSTMs (16) -> 2 x relu(masked 1x1 "b", 32)
    -> masked 1x1 "b" (3) -> sigmoid * 255. Square inputs only (the original's unskew
    keeps `height` columns).
    """
    h, w = input_shape[0], input_shape[1]
    if h != w:
        raise ValueError(f"Pixel-RNN needs square inputs, got {input_shape}")
    inp = keras.Input(input_shape)
    x = layers.Rescaling(1.0 / 255.0, name="normalized_inputs")(inp)
    x = MaskedConv2D(PIXEL_HIDDEN, 7, "a", name="conv_inputs")(x)
    for i in range(7):
        x = DiagonalBiLSTM(h, name=f"LSTM{i}")(x)
    for i in range(2):
        x = layers.ReLU()(MaskedConv2D(32, 1, "b", name=f"CONV_OUT{i}")(x))
    x = MaskedConv2D(output_shape[-1], 1, "b", name="conv2d_out_logits")(x)
    out = layers.Rescaling(255.0, name="output")(layers.Activation("sigmoid")(x))
    return keras.Model(inp, out, name="pixel_rnn")


# --------------------------------------------------------------------------- GNMT

GNMT_UNITS = 1024
GNMT_VOCAB = 32316         # BPE vocabularies (vocab.bpe.32000.{en,de}), same size for both
GNMT_LAYERS = 8
GNMT_SOS, GNMT_EOS = 1, 2  # tensorflow/nmt: <unk>=0, <s>=1, </s>=2


def _nmt_init():
    # tensorflow/nmt's default init_op "uniform": U(-0.1, 0.1) for every weight
    # (LSTM biases stay zero). Also much faster than Keras' orthogonal default.
    return keras.initializers.RandomUniform(-0.1, 0.1)


def _nmt_cell(units, **kwargs):
    return layers.LSTMCell(units, kernel_initializer=_nmt_init(), recurrent_initializer=_nmt_init(), **kwargs)


class GNMTDecoder(layers.Layer):
    """tensorflow/nmt GNMT decoder ("gnmt_v2" attention), greedy, a fixed number of steps.

    Eight LSTM layers; layer 0 is wrapped with normalised Bahdanau attention
    (output_attention=False, no attention layer) and the new attention context
    is concatenated to the input of every upper layer; layers 2..7 are
    residual. The output projection (no bias) gives logits whose argmax is fed
    back. tensorflow/nmt stops at </s> or after 2 x source length steps; with
    random weights the stop is arbitrary, so the step count is fixed here.
    """

    def __init__(self, steps, units=GNMT_UNITS, vocab=GNMT_VOCAB, num_layers=GNMT_LAYERS, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.units, self.vocab, self.num_layers = steps, units, vocab, num_layers
        init = _nmt_init
        self.embedding = layers.Embedding(vocab, units, embeddings_initializer=init(), name="embedding_decoder")
        self.cells = [_nmt_cell(units, name=f"cell_{i}") for i in range(num_layers)]
        self.memory_layer = layers.Dense(units, use_bias=False, kernel_initializer=init(), name="memory_layer")
        self.query_layer = layers.Dense(units, use_bias=False, kernel_initializer=init(), name="query_layer")
        self.output_layer = layers.Dense(vocab, use_bias=False, kernel_initializer=init(), name="output_projection")

    def build(self, input_shape):
        memory_shape = input_shape[0]
        u = self.units
        self.embedding.build((None,))
        for cell in self.cells:
            cell.build((None, 2 * u))  # layer input (embedding or layer below) + attention
        self.memory_layer.build(memory_shape)
        self.query_layer.build((None, u))
        self.output_layer.build((None, u))
        self.attention_v = self.add_weight(name="attention_v", shape=(u,), initializer=_nmt_init())
        self.attention_g = self.add_weight(name="attention_g", shape=(),
                                           initializer=keras.initializers.Constant(np.sqrt(1.0 / u)))
        self.attention_b = self.add_weight(name="attention_b", shape=(u,), initializer="zeros")

    def _attend(self, query, keys, memory):
        v = ops.cast(self.attention_v, keys.dtype)
        normed_v = ops.cast(self.attention_g, keys.dtype) * v * ops.rsqrt(ops.sum(ops.square(v)))
        processed = self.query_layer(query)[:, None, :]
        b = ops.cast(self.attention_b, keys.dtype)
        score = ops.sum(normed_v * ops.tanh(keys + processed + b), axis=2)
        alignments = ops.softmax(score, axis=-1)
        return ops.matmul(alignments[:, None, :], memory)[:, 0, :]

    def call(self, inputs):
        memory, *flat_states = inputs
        states = [list(flat_states[2 * i:2 * i + 2]) for i in range(self.num_layers)]  # [h, c] per layer
        keys = self.memory_layer(memory)
        batch = ops.shape(memory)[0]
        ids = ops.full((batch,), GNMT_SOS, dtype="int32")
        attention = ops.zeros((batch, self.units), dtype=memory.dtype)
        outputs = []
        for _ in range(self.steps):
            x = self.embedding(ids)
            cur, states[0] = self.cells[0](ops.concatenate([x, attention], -1), states[0])
            attention = self._attend(cur, keys, memory)
            for i in range(1, self.num_layers):
                out, states[i] = self.cells[i](ops.concatenate([cur, attention], -1), states[i])
                cur = out + cur if i >= 2 else out  # gnmt_residual_fn: adds the non-attention part
            ids = ops.cast(ops.argmax(self.output_layer(cur), axis=-1), "int32")
            outputs.append(ids)
        return ops.stack(outputs, axis=1)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs[0].shape[0], self.steps), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "steps": self.steps, "units": self.units, "vocab": self.vocab,
                "num_layers": self.num_layers}


def gnmt(input_shape: tuple, output_shape: tuple) -> keras.Model:
    """GNMT (tensorflow/nmt, 8+8 layers, 1024 units), inference only.

    Input: source BPE token ids, int32, shape (source length,). Output: the
    greedy target token ids, int32, shape (output_shape[0],) = decode steps.
    The original's string handling (whitespace split, vocabulary lookup
    tables, id-to-string lookup) is left out.
    """
    u = GNMT_UNITS
    src = keras.Input(input_shape, dtype="int32", name="source_ids")
    x = layers.Embedding(GNMT_VOCAB, u, embeddings_initializer=_nmt_init(), name="embedding_encoder")(src)
    # Layer 1: bidirectional; its backward final state seeds decoder layer 0 (pass_hidden_state).
    x, _, _, bw_h, bw_c = layers.Bidirectional(
        layers.RNN(_nmt_cell(u), return_sequences=True, return_state=True), name="encoder_bi")(x)
    states = [bw_h, bw_c]
    # Layers 2..8: unidirectional; the first takes the 2048-wide concat, the next six are residual.
    for i in range(GNMT_LAYERS - 1):
        y, h, c = layers.RNN(_nmt_cell(u), return_sequences=True, return_state=True,
                             name=f"encoder_uni_{i}")(x)
        x = layers.Add(name=f"encoder_residual_{i}")([x, y]) if i >= 1 else y
        states += [h, c]
    out = GNMTDecoder(output_shape[0], name="decoder")([x, *states])
    return keras.Model(src, out, name="gnmt")
