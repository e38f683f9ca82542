"""TreeMS's layers (paper 003): gates from scenario paths, tower experts, scenario-aware attention, Eq. 15."""
import numpy as np
import pytest
import tensorflow as tf

from tfgb.layers.treems import (
    ScenarioGraphAttention,
    TowerExperts,
    TreeGates,
    inconsistency_loss,
)


def test_inconsistency_loss_against_hand_computed_values():
    gates = np.array([[[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]],
                      [[1 / 3, 1 / 3, 1 / 3], [0.6, 0.4, 0.0]]], np.float32)
    # -sum over layers of sum_{k<k'} g_k g_k'
    row0 = -((0.5 * 0.3 + 0.5 * 0.2 + 0.3 * 0.2) + 0.0)
    row1 = -(3 * (1 / 9) + 0.6 * 0.4)
    np.testing.assert_allclose(inconsistency_loss(tf.constant(gates)).numpy(), [row0, row1], rtol=1e-6)
    # uniform gates are the minimum, -H (1 - 1/n) / 2
    uniform = np.full((1, 4, 8), 1 / 8, np.float32)
    np.testing.assert_allclose(inconsistency_loss(tf.constant(uniform)).numpy(), [-4 * (1 - 1 / 8) / 2], rtol=1e-6)
    # the batch reading (aux_over = "batch") is Eq. 15 of the mean gate: two scenarios that each use one
    # expert of two, a different one, balance the load as well as uniform gates do; per row they are the worst
    split = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], np.float32)
    mean = tf.reduce_mean(tf.constant(split), 0, keepdims=True)
    np.testing.assert_allclose(inconsistency_loss(mean).numpy(), [-0.25], rtol=1e-6)
    np.testing.assert_allclose(inconsistency_loss(tf.constant(split)).numpy(), [0.0, 0.0], atol=1e-7)


def test_tree_gates_are_softmaxes_that_change_with_the_path_and_follow_the_shared_prefix():
    tf.keras.utils.set_random_seed(0)
    gates = TreeGates(num_nodes=8, node_dim=4, units=6, num_experts=5, layers=3, name="g")
    paths = tf.constant([[1, 2, 4], [1, 2, 5], [1, 3, 6]], tf.int32)
    g, context = gates(paths)
    assert g.shape == (3, 3, 5) and context.shape == (3, 6)
    np.testing.assert_allclose(tf.reduce_sum(g, -1).numpy(), np.ones((3, 3)), rtol=1e-5)
    # an LSTM: positions up to the first difference see the same prefix, hence the same gates
    np.testing.assert_allclose(g[0, :2], g[1, :2], rtol=1e-6)
    assert np.abs(g[0, 2] - g[1, 2]).max() > 1e-4  # different leaves
    assert np.abs(g[0, 1] - g[2, 1]).max() > 1e-4  # different mid nodes
    np.testing.assert_allclose(gates(paths)[0], g)  # deterministic


def test_leaf_gates_depend_on_the_leaf_alone():
    tf.keras.utils.set_random_seed(0)
    gates = TreeGates(num_nodes=8, node_dim=4, units=6, num_experts=5, layers=3, mode="leaf", name="g")
    g, _ = gates(tf.constant([[1, 2, 4], [1, 3, 4], [1, 2, 5]], tf.int32))
    np.testing.assert_allclose(g[0], g[1], rtol=1e-6)  # same leaf, other ancestors
    assert np.abs(g[0] - g[2]).max() > 1e-4


def _graph():
    tf.keras.utils.set_random_seed(1)
    table = tf.random.normal([6, 4])
    neighbours = tf.constant([[1, 2, 3], [0, -1, -1], [0, 1, -1], [-1, -1, -1], [5, 0, 1], [4, -1, -1]], tf.int32)
    return table, neighbours


@pytest.mark.parametrize("attention", ["paper", "product"])
def test_attention_weights_sum_to_one_per_node_and_change_with_the_scenario(attention):
    table, neighbours = _graph()
    layer = ScenarioGraphAttention(levels=1, dim=4, attention=attention, name="att")
    nodes = tf.constant([0, 2, 3, 4], tf.int32)
    ctx_a, ctx_b = tf.fill([4, 3], 2.0), tf.fill([4, 3], -2.0)
    rep_a, w_a = layer((table, neighbours, nodes, ctx_a))
    _, w_b = layer((table, neighbours, nodes, ctx_b))
    assert rep_a.shape == (4, 4) and w_a.shape == (4, 3)
    sums = tf.reduce_sum(w_a, -1).numpy()
    np.testing.assert_allclose(sums[[0, 1, 3]], 1.0, rtol=1e-5)
    assert sums[2] == 0.0  # node 3 has no neighbour: nothing to aggregate
    np.testing.assert_array_equal(w_a.numpy()[1, 2], 0.0)  # padding gets no weight
    # the context reaches the weights (for "paper" only through LeakyReLU's kink)
    assert np.abs(w_a.numpy() - w_b.numpy()).max() > 1e-3


def test_attention_is_invariant_to_the_order_of_neighbours_and_has_two_levels():
    table, neighbours = _graph()
    shuffled = tf.constant([[3, 1, 2], [-1, 0, -1], [1, -1, 0], [-1, -1, -1], [1, 5, 0], [-1, 4, -1]], tf.int32)
    for levels in (1, 2):
        layer = ScenarioGraphAttention(levels=levels, dim=4, attention="product", name=f"att{levels}")
        nodes = tf.constant([[0, 1], [4, 5]], tf.int32)
        ctx = tf.random.normal([2, 1, 3])
        a, _ = layer((table, neighbours, nodes, ctx))
        b, _ = layer((table, shuffled, nodes, ctx))
        assert a.shape == (2, 2, 4)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_tower_experts_mix_each_layer_by_its_gate_and_score_candidates_independently():
    tf.keras.utils.set_random_seed(2)
    experts = TowerExperts(num_experts=3, widths=[8, 4], hidden=[5], name="e")
    list_part, cand = tf.random.normal([2, 6]), tf.random.normal([2, 4, 7])
    gates = tf.nn.softmax(tf.random.normal([2, 2, 3]))
    logits, z = experts((list_part, cand, gates))
    assert logits.shape == (2, 4) and z.shape == (2, 4, 12)
    perm = [2, 0, 3, 1]
    logits_p, _ = experts((list_part, tf.gather(cand, perm, axis=1), gates))
    np.testing.assert_allclose(logits_p.numpy(), tf.gather(logits, perm, axis=1).numpy(), rtol=1e-5, atol=1e-6)
    # layer 1 of row 0 by hand: relu(x W_k + b_k) mixed by the gate
    x = tf.concat([list_part[0], cand[0, 0]], 0).numpy()
    w = np.concatenate([experts.w_list.numpy(), experts.w_cand.numpy()], 1)  # [n, 13, 8]
    f1 = np.maximum(np.einsum("d,kdo->ko", x, w) + experts.biases[0].numpy(), 0)
    np.testing.assert_allclose(z[0, 0, :8].numpy(), gates[0, 0].numpy() @ f1, rtol=1e-4, atol=1e-6)
    # a one-hot gate on layer 2 passes that expert's layer 2 alone
    one_hot = tf.constant([[[1 / 3] * 3, [0.0, 1.0, 0.0]]] * 2)
    _, z1 = experts((list_part, cand, one_hot))
    f2 = np.maximum(np.einsum("ko,kop->kp", f1, experts.kernels[0].numpy()) + experts.biases[1].numpy(), 0)
    np.testing.assert_allclose(z1[0, 0, 8:].numpy(), f2[1], rtol=1e-4, atol=1e-6)
