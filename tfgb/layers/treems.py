"""TreeMS's layers (paper 003): tree-guided gates, tower experts, scenario-aware multi-view graph attention.

* :class:`TreeGates` (Eq. 4, 6): the node embeddings o_1..o_H of a scenario's root-to-leaf path run
  through an LSTM; the hidden state h_i of position i gives layer i's gate ``softmax(W_i h_i)`` over the n
  experts. ``mode = "leaf"`` is the flat gate the tree is measured against: every layer's gate comes
  from one embedding of the leaf node alone (no path, no LSTM).
* :class:`TowerExperts` (Eq. 5, 7): n experts of H layers each (a tower: the widths shrink with depth);
  layer i's outputs are mixed by layer i's gate, ``z_i = sum_k g_i^k f_i^k(x)``, and the z_i are
  concatenated for the prediction MLP. The input x (Eq. 3) comes in two parts, the list's (source user,
  scenario context) and the candidate's (destination user, interaction history), so the list part of
  the first layer is computed once per list, not once per candidate.
* :class:`ScenarioGraphAttention` (Eq. 8-12): one view's L attention levels over a fixed neighbour
  sample. ``attention = "paper"`` is Eq. 10 as printed, ``LeakyReLU(a^T [u_i || u_j || c])``: the
  context c adds the same ``a_c . c`` to every neighbour's logit, so it changes the weights only through
  LeakyReLU's kink (below it the slope is 0.2, above it 1). ``"product"`` adds a term in which c meets
  each neighbour, ``a_p . (u_j * P c)``, so the scenario can reorder the neighbours.
* :func:`inconsistency_loss` (Eq. 15).

Every function maps each row on its own: nothing mixes the rows of a batch or the candidates of a list.
"""
from __future__ import annotations

import tensorflow as tf


def inconsistency_loss(gates: tf.Tensor) -> tf.Tensor:
    """Eq. 15 per row: ``-sum_i sum_{k<k'} g_i^k g_i^k'`` of gates [N, H, n] -> [N].

    ``sum_{k<k'} g^k g^k' = ((sum_k g^k)^2 - sum_k (g^k)^2) / 2 = (1 - sum_k (g^k)^2) / 2`` for a softmax
    gate; the loss is smallest (most negative) for uniform gates, ``-H (1 - 1/n) / 2``.
    """
    total = tf.reduce_sum(gates, -1)
    return -0.5 * tf.reduce_sum(tf.square(total) - tf.reduce_sum(tf.square(gates), -1), -1)


class TreeGates(tf.keras.layers.Layer):
    """Gates of every expert layer from a scenario path (Eq. 4, 6), and the scenario's context vector.

    Args:
      num_nodes: node ids are ``[0, num_nodes)`` (0 = unknown, 1 = the root).
      node_dim: width of the node embeddings o.
      units: width of the LSTM's hidden state h (and of the context vector).
      num_experts: n.
      layers: H, the path length = the experts' depth.
      mode: ``"tree"`` (LSTM over the path) or ``"leaf"`` (gates from the leaf's embedding only).

    Call: ``paths`` [B, H] node ids -> ``(gates [B, H, n], context [B, units])``; the context is h_H, the
    hidden state after the leaf (in ``"leaf"`` mode the leaf's embedding).
    """

    def __init__(self, num_nodes: int, node_dim: int, units: int, num_experts: int, layers: int,
                 mode: str = "tree", **kwargs):
        super().__init__(**kwargs)
        self.mode, self.depth = mode, layers
        init = tf.keras.initializers.RandomNormal(stddev=0.1)  # one table: one instance
        if mode == "tree":
            self.nodes = tf.keras.layers.Embedding(num_nodes, node_dim, embeddings_initializer=init, name="nodes")
            self.lstm = tf.keras.layers.LSTM(units, return_sequences=True, name="lstm")
        else:
            self.nodes = tf.keras.layers.Embedding(num_nodes, units, embeddings_initializer=init, name="leaves")
        self.gate_layers = [tf.keras.layers.Dense(num_experts, name=f"gate_{i}") for i in range(layers)]

    def call(self, paths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.mode == "tree":
            hidden = self.lstm(self.nodes(paths))  # [B, H, units], h_i = LSTM(o_1..o_i)
            states = [hidden[:, i] for i in range(self.depth)]
        else:
            leaf = self.nodes(paths[:, -1])  # the deepest node of the path
            states = [leaf] * self.depth
        gates = tf.stack([tf.nn.softmax(layer(h)) for layer, h in zip(self.gate_layers, states)], 1)
        return gates, states[-1]


class TowerExperts(tf.keras.layers.Layer):
    """n tower experts of H layers, mixed per layer by the gates, then the prediction MLP (Eq. 5, 7).

    Args:
      num_experts: n.
      widths: the H layer widths of every expert (a tower: e.g. 64, 32, 16).
      hidden: widths of the MLP on ``concat(z_1, ..., z_H)`` before the one-unit prediction layer.
      zero_head: start the prediction layer's kernel at zero (the logit starts at its bias).

    Call: ``(list_part [B, Dl], cand_part [B, C, Dc], gates [B, H, n])`` -> ``(logits [B, C], z [B, C, sum widths])``.
    """

    def __init__(self, num_experts: int, widths: list[int], hidden: list[int], zero_head: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_experts, self.widths = num_experts, list(widths)
        self.mlp = [tf.keras.layers.Dense(w, activation="relu", name=f"mlp_{n}") for n, w in enumerate(hidden)]
        self.head = tf.keras.layers.Dense(1, kernel_initializer="zeros" if zero_head else "glorot_uniform",
                                          name="predict")

    def build(self, input_shape):
        list_shape, cand_shape, _ = input_shape
        n, glorot = self.num_experts, tf.keras.initializers.GlorotUniform  # a new instance per weight
        first = self.widths[0]
        self.w_list = self.add_weight(name="w1_list", shape=(n, int(list_shape[-1]), first), initializer=glorot())
        self.w_cand = self.add_weight(name="w1_cand", shape=(n, int(cand_shape[-1]), first), initializer=glorot())
        self.kernels = [self.add_weight(name=f"w{i + 2}", shape=(n, a, b), initializer=glorot())
                        for i, (a, b) in enumerate(zip(self.widths[:-1], self.widths[1:]))]
        self.biases = [self.add_weight(name=f"b{i + 1}", shape=(n, w), initializer="zeros")
                       for i, w in enumerate(self.widths)]
        super().build(input_shape)

    def call(self, inputs) -> tuple[tf.Tensor, tf.Tensor]:
        list_part, cand_part, gates = inputs
        first = tf.einsum("bd,kdo->bko", list_part, self.w_list)[:, None]  # once per list
        f = tf.nn.relu(first + tf.einsum("bcd,kdo->bcko", cand_part, self.w_cand) + self.biases[0])
        mixed = [tf.einsum("bcko,bk->bco", f, gates[:, 0])]
        for i, kernel in enumerate(self.kernels, start=1):
            f = tf.nn.relu(tf.einsum("bcki,kio->bcko", f, kernel) + self.biases[i])
            mixed.append(tf.einsum("bcko,bk->bco", f, gates[:, i]))
        z = tf.concat(mixed, -1)
        x = z
        for layer in self.mlp:
            x = layer(x)
        return self.head(x)[..., 0], z


class ScenarioGraphAttention(tf.keras.layers.Layer):
    """One view's ``L`` levels of scenario-aware neighbour attention (Eq. 8-12).

    Level l of node i: ``alpha_ij = softmax_j(LeakyReLU(a^T [u_i || u_j || c]))`` over the sampled
    neighbours j (Eq. 10), ``u~_i = sum_j alpha_ij u_j`` (Eq. 11), ``u_i = LeakyReLU(W [u_i || u~_i])``
    (Eq. 12), every u of level l - 1. A node without neighbours aggregates zero.

    Args:
      levels: L.
      dim: width of the user embeddings (every level keeps it, as Eq. 12 requires).
      attention: ``"paper"`` or ``"product"`` (module docstring).

    Call: ``(table [U, d], neighbours [U', K] int (-1 = none), nodes [S...] int, context [S..., dc])``
    -> ``(reps [S..., d], weights [S..., K])`` (the last level's attention weights of the nodes).
    """

    def __init__(self, levels: int, dim: int, attention: str = "paper", **kwargs):
        super().__init__(**kwargs)
        self.levels, self.dim, self.attention = levels, dim, attention

    def build(self, input_shape):
        table_shape, _, _, context_shape = input_shape
        d, dc = int(table_shape[-1]), int(context_shape[-1])

        def normal():  # a new instance per weight: one shared instance gives every weight the same values
            return tf.keras.initializers.RandomNormal(stddev=0.1)

        self.a_self = [self.add_weight(name=f"a_self_{l}", shape=(d,), initializer=normal()) for l in range(self.levels)]
        self.a_nb = [self.add_weight(name=f"a_nb_{l}", shape=(d,), initializer=normal()) for l in range(self.levels)]
        self.a_ctx = [self.add_weight(name=f"a_ctx_{l}", shape=(dc,), initializer=normal()) for l in range(self.levels)]
        if self.attention == "product":
            self.proj = [self.add_weight(name=f"p_{l}", shape=(dc, d), initializer="glorot_uniform")
                         for l in range(self.levels)]
            self.a_prod = [self.add_weight(name=f"a_prod_{l}", shape=(d,), initializer=normal())
                           for l in range(self.levels)]
        self.update = [self.add_weight(name=f"w_{l}", shape=(2 * d, d), initializer="glorot_uniform")
                       for l in range(self.levels)]
        super().build(input_shape)

    def call(self, inputs) -> tuple[tf.Tensor, tf.Tensor]:
        table, neighbours, nodes, context = inputs
        return self._level(table, neighbours, nodes, context, self.levels)

    def _level(self, table, neighbours, nodes, context, level):
        if level == 0:
            return tf.gather(table, nodes), None
        l = level - 1
        own, _ = self._level(table, neighbours, nodes, context, level - 1)  # [S, d]
        near = tf.gather(neighbours, nodes)  # [S, K], -1 = no neighbour
        mask = near >= 0
        near_context = None if level == 1 else tf.broadcast_to(
            context[..., None, :], tf.concat([tf.shape(near), tf.shape(context)[-1:]], 0))
        theirs, _ = self._level(table, neighbours, tf.maximum(near, 0), near_context, level - 1)  # [S, K, d]
        score = (tf.reduce_sum(own * self.a_self[l], -1, keepdims=True) + tf.reduce_sum(theirs * self.a_nb[l], -1)
                 + tf.reduce_sum(context * self.a_ctx[l], -1, keepdims=True))
        if self.attention == "product":
            score += tf.reduce_sum(theirs * tf.tensordot(context, self.proj[l], 1)[..., None, :] * self.a_prod[l], -1)
        score = tf.nn.leaky_relu(score, alpha=0.2)
        score = tf.where(mask, score, tf.reduce_min(score, -1, keepdims=True))
        weights = tf.exp(score - tf.reduce_max(score, -1, keepdims=True)) * tf.cast(mask, score.dtype)
        weights = tf.math.divide_no_nan(weights, tf.reduce_sum(weights, -1, keepdims=True))
        aggregated = tf.reduce_sum(weights[..., None] * theirs, -2)
        out = tf.nn.leaky_relu(tf.tensordot(tf.concat([own, aggregated], -1), self.update[l], 1), alpha=0.2)
        return out, weights
