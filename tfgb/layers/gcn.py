"""Multi-view GCN embeddings of initiators, items and participants (Section II-C of MGBR).

`GCNView` is one view: H layers of `X^l = sigmoid(Â X^{l-1} W^{l-1})` over a trainable
embedding table (Eq. 1-3). `MultiViewGCN` runs the initiator view G_UI, the participant view
G_PI and the social view G_UP, each with its own embedding table and weights, and
concatenates their outputs into the initiator, item and participant embeddings (Eq. 4-6).

Graphs are call arguments (normalized `tf.sparse.SparseTensor` adjacencies with self-loops,
indices in row-major order), not layer state, so that an exported model can run the
propagation once and keep only the resulting embeddings.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tfgb.layers.propagation import sparse_matmul

__all__ = ["GCNView", "MultiViewGCN"]

_MODES = ("multi", "hetero")


@tf.keras.utils.register_keras_serializable(package="tfgb")
class GCNView(tf.keras.layers.Layer):
    """GCN over one graph with its own N(0, 1) embedding table (Eq. 1-3 of MGBR).

    X^0 is a trainable table [num_nodes, dim] drawn from N(0, init_std^2) (the paper: N(0, 1)); each of the `num_layers`
    layers computes `X^l = sigmoid(Â X^{l-1} W^{l-1})` with W^{l-1} [dim, dim] (Glorot
    uniform, no bias). The output is the last layer, X^H; with `num_layers=0` it is X^0.

    Weights, in `get_weights()` order: `embeddings` [num_nodes, dim], then `kernel_0` ...
    `kernel_{H-1}`, each [dim, dim].

    Args:
        num_nodes: Number of graph nodes (rows of the adjacency).
        dim: Embedding width d.
        num_layers: Number of propagation layers H (>= 0).
        symmetric: Whether the adjacencies passed to `call` are symmetric (see
            `sparse_matmul`); normalized adjacencies of undirected graphs are.
        init_std: Standard deviation of the initial table X^0.
        recompute: Keep none of the layers' activations for the backward pass and compute them
            again there (`tf.recompute_grad`): the same gradients for one more forward pass, and
            ~3 [num_nodes, dim] tensors per layer less memory at the peak of a training step.
        **kwargs: Base `Layer` arguments (name, dtype, ...).
    """

    def __init__(
        self,
        num_nodes: int,
        dim: int,
        num_layers: int,
        symmetric: bool = True,
        init_std: float = 1.0,
        recompute: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_nodes < 1 or dim < 1 or num_layers < 0:
            raise ValueError(
                f"GCNView needs num_nodes >= 1, dim >= 1 and num_layers >= 0, got "
                f"num_nodes={num_nodes}, dim={dim}, num_layers={num_layers}."
            )
        self.num_nodes = int(num_nodes)
        self.dim = int(dim)
        self.num_layers = int(num_layers)
        self.symmetric = bool(symmetric)
        self.init_std = float(init_std)
        self.recompute = bool(recompute)

    def build(self, input_shape: Any = None) -> None:
        """Creates X^0 [num_nodes, dim] and W^0..W^{H-1} [dim, dim]."""
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_nodes, self.dim),
            initializer=tf.keras.initializers.RandomNormal(0.0, self.init_std),
        )
        self.kernels = [
            self.add_weight(
                name=f"kernel_{layer}",
                shape=(self.dim, self.dim),
                initializer="glorot_uniform",
            )
            for layer in range(self.num_layers)
        ]
        super().build(input_shape)

    def call(self, adj: tf.sparse.SparseTensor) -> tf.Tensor:
        """Propagates the embedding table over `adj` (Eq. 1-3).

        Args:
            adj: Normalized adjacency with self-loops [num_nodes, num_nodes].

        Returns:
            X^H [num_nodes, dim].
        """
        x = tf.convert_to_tensor(self.embeddings)
        if self.recompute and self.kernels:
            return tf.recompute_grad(lambda x0: self._layers(adj, x0))(x)
        return self._layers(adj, x)

    def _layers(self, adj: tf.sparse.SparseTensor, x: tf.Tensor) -> tf.Tensor:
        for kernel in self.kernels:
            x = tf.sigmoid(tf.matmul(sparse_matmul(adj, x, symmetric=self.symmetric), kernel))
        return x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_nodes=self.num_nodes,
            dim=self.dim,
            num_layers=self.num_layers,
            symmetric=self.symmetric,
            init_std=self.init_std,
            recompute=self.recompute,
        )
        return config


@tf.keras.utils.register_keras_serializable(package="tfgb")
class MultiViewGCN(tf.keras.layers.Layer):
    """Multi-view embeddings of initiators, items and participants (Eq. 1-6 of MGBR).

    Mode "multi" (MGBR) runs three `GCNView`s, each with its own table and weights:
    "ui" over G_UI and "pi" over G_PI (U + I nodes each, users first, then items) and
    "up" over G_UP (U user nodes). The outputs are

        users_i = e_u = e_u^UI || e_u^UP   [U, 2d]   (Eq. 4)
        items   = e_i = e_i^UI || e_i^PI   [I, 2d]   (Eq. 5)
        users_p = e_p = e_p^PI || e_p^UP   [U, 2d]   (Eq. 6)

    Mode "hetero" (the MGBR-D variant) runs one `GCNView` of width 2d over a single
    heterogeneous graph "hetero" with U + I nodes (users first, then items); its user rows
    are both `users_i` and `users_p` and its item rows are `items`, so the outputs keep the
    shapes above.

    Weights, in `get_weights()` order: those of the "ui", "pi" and "up" views (mode
    "multi") or of the "hetero" view, each as in `GCNView`. `graph_keys` names the graphs
    that `call` needs.

    Args:
        num_users: Number of users U (initiators and participants share ids).
        num_items: Number of items I.
        dim: Per-view embedding width d; outputs are 2d wide.
        num_layers: GCN layers H per view.
        mode: "multi" (three views) or "hetero" (one graph).
        init_std: Standard deviation of every view's initial table X^0.
        recompute: Recompute each view's activations in the backward pass (see `GCNView`).
        **kwargs: Base `Layer` arguments.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int,
        num_layers: int,
        mode: str = "multi",
        init_std: float = 1.0,
        recompute: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"MultiViewGCN mode must be one of {_MODES}, got {mode!r}.")
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.dim = int(dim)
        self.num_layers = int(num_layers)
        self.mode = mode
        self.init_std = float(init_std)
        self.recompute = bool(recompute)
        nodes = self.num_users + self.num_items
        # A list, not a dict: Keras orders a dict's layers by key, and the weight order
        # (ui, pi, up) is documented.
        if mode == "multi":
            self.graph_keys: tuple[str, ...] = ("ui", "pi", "up")
            sizes = (nodes, nodes, self.num_users)
            self.views = [
                GCNView(size, self.dim, self.num_layers, init_std=self.init_std, recompute=self.recompute, name=key)
                for key, size in zip(self.graph_keys, sizes)
            ]
        else:
            self.graph_keys = ("hetero",)
            self.views = [GCNView(nodes, 2 * self.dim, self.num_layers, init_std=self.init_std,
                                  recompute=self.recompute, name="hetero")]

    def build(self, input_shape: Any = None) -> None:
        """Builds the per-view GCNs (tables and kernels)."""
        for view in self.views:
            view.build(None)
        super().build(input_shape)

    def call(self, graphs: Mapping[str, tf.sparse.SparseTensor]) -> dict[str, tf.Tensor]:
        """Computes e_u, e_i and e_p for every user and item (Eq. 4-6).

        Args:
            graphs: Normalized adjacencies with self-loops: "ui" and "pi" [U+I, U+I] and
                "up" [U, U] in mode "multi"; "hetero" [U+I, U+I] in mode "hetero".
                Other keys are ignored.

        Returns:
            Dict with "users_i" [U, 2d] (initiator embeddings e_u), "items" [I, 2d] (item
            embeddings e_i) and "users_p" [U, 2d] (participant embeddings e_p).
        """
        missing = [key for key in self.graph_keys if key not in graphs]
        if missing:
            raise ValueError(
                f"MultiViewGCN (mode {self.mode!r}) needs graphs {list(self.graph_keys)}, "
                f"missing {missing}."
            )
        u = self.num_users
        outputs = [view(graphs[key]) for key, view in zip(self.graph_keys, self.views)]
        if self.mode == "hetero":
            users = outputs[0][:u]
            return {"users_i": users, "items": outputs[0][u:], "users_p": users}
        x_ui, x_pi, x_up = outputs
        return {
            "users_i": tf.concat([x_ui[:u], x_up], axis=-1),
            "items": tf.concat([x_ui[u:], x_pi[u:]], axis=-1),
            "users_p": tf.concat([x_pi[:u], x_up], axis=-1),
        }

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_users=self.num_users,
            num_items=self.num_items,
            dim=self.dim,
            num_layers=self.num_layers,
            mode=self.mode,
            init_std=self.init_std,
            recompute=self.recompute,
        )
        return config
