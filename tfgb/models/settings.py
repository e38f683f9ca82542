"""The settings dataclass of every registered model and plug-in: one ``[model.<section>]`` of a recipe each
(:mod:`tfgb.models.registry` registers them with their models)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class MGBRSettings:
    """MGBR (paper 000): multi-view GCN, multi-task experts with adjusted gates, two heads."""

    embedding_dim: int = 32  # d
    gcn_layers: int = 2  # H
    num_experts: int = 4  # K
    mtl_layers: int = 2  # L
    alpha: float = 0.1  # alpha_A = alpha_B, Eq. 12-13
    shared_experts: bool = True  # False = MGBR-M
    graph: str = "multi"  # "multi" (three views) or "hetero" (MGBR-D)
    standardize: bool = True  # standardize each GCN output column over all nodes before the experts
    gate_softmax: bool = True  # gates as attention (softmax over experts); false = raw linear weights
    init_std: float = 1.0  # std of the initial GCN embedding tables X^0 (the paper: N(0, 1))
    embedding_dropout: float = 0.0  # dropout on e_u, e_i, e_p when training (per entity of a batch)
    bias: bool = False  # a learned item bias on task A's logit and a participant bias on task B's
    bias_init: str = "zeros"  # "zeros" or "log_count": log(1 + training count) of the item / participant
    head_zero_init: bool = False  # start the heads' logit kernels at zero (the block adds nothing at step 0)
    recompute_gcn: bool = False  # recompute the GCN activations in the backward pass (less memory, more time)
    mlp_hidden: list[int] = dataclasses.field(default_factory=lambda: [32])
    # The launch -> deal cascade as a plug-in (tfgb.models.launch): a launch head whose logit is added to
    # task A's, trained on the behaviour rows (deals and failed launches), weighted by launch_weight.
    launch_task: bool = False
    launch_weight: float = 1.0


@dataclasses.dataclass
class MAMGBRSettings(MGBRSettings):
    """MAMGBR (paper 001): MGBR with multi-head attention experts and two-layer softmax gates."""

    heads: int = 8  # attention heads
    dropout: float = 0.1
    attention: bool = True  # False = MAMGBR-MH (experts without multi-head attention)


@dataclasses.dataclass
class EmbeddingSettings:
    """Dot-product baselines without propagation."""

    embedding_dim: int = 32


@dataclasses.dataclass
class GraphSettings:
    """Dot-product baselines with graph propagation."""

    embedding_dim: int = 32
    gcn_layers: int = 2  # propagation layers


@dataclasses.dataclass
class NGCFSettings(GraphSettings):
    dropout: float = 0.1  # message dropout, training only


@dataclasses.dataclass
class GBMFSettings(EmbeddingSettings):
    friend_weight: float = 0.5  # a: weight of the friends' term in task A


@dataclasses.dataclass
class NMTRSettings:
    """NMTR (paper 004): shared embeddings, one NCF unit per behaviour, cascaded predictions."""

    embedding_dim: int = 32  # E (the paper: 64)
    unit: str = "neumf"  # gmf | mlp | neumf, for every behaviour (Eq. 6-8)
    units: list[str] = dataclasses.field(default_factory=list)  # one per behaviour, overrides `unit`
    mlp_layers: int = 3  # L of the MLP part (the paper: 3)
    weights: list[float] = dataclasses.field(default_factory=list)  # lambda_r of Eq. 12; [] = equal; normalised
    cascade: str = "sum"  # "sum" = Eq. 9; "mean" = the averaged cascade of the authors' code
    launch: bool = True  # False = the deal behaviour alone (single-behaviour NCF, variant nmtr-single)
    init_std: float = 0.1  # std of the initial embeddings


@dataclasses.dataclass
class GPRecSettings:
    """GPRec (paper 002) as a plug-in, ``model.user_modeling = "gprec"`` (:mod:`tfgb.models.gprec`)."""

    strategy: str = "input"  # input (Eq. 14) | dynamic (Eq. 15-16) | ensemble (Eq. 17-18)
    groups: int = 60  # G
    tau: float = 0.5  # Gumbel-softmax temperature (Eq. 3)
    gumbel: bool = True  # Gumbel noise on the masks in training (Eq. 3); never in evaluation or export
    dim: int = 16  # d of the feature, personal and group embeddings (the paper: 16)
    personal: str = "own"  # E_p: GPRec's own user embedding (own) or the backbone's initiator row (backbone)
    pool: str = "concat"  # r_G: concat (Eq. 6, G * d wide) | sum (of the G patterns, d wide)
    lambda1: float = 1.0  # L_G
    lambda2: float = 0.001  # L_G^Con (maximised)
    lambda3: float = 0.0001  # L_O
    orthogonal: str = "abs"  # L_O = mean |cos| (abs) | cos^2 (square) | the signed cosine of Eq. 13 (signed)
    classifier_hidden: list[int] = dataclasses.field(default_factory=lambda: [64, 32])  # g, per group (Eq. 2)
    mlp_hidden: list[int] = dataclasses.field(default_factory=lambda: [64, 32, 16])  # f1, f_G, f_P


@dataclasses.dataclass
class TreeMSSettings:
    """TreeMS (paper 003): tree-guided experts and scenario-aware multi-view user-graph attention, task B."""

    embedding_dim: int = 32  # d of users and items (every view and attention level keeps it)
    node_dim: int = 16  # width of the scenario tree's node embeddings o (Eq. 4)
    lstm_units: int = 16  # width of the LSTM's h (Eq. 4)
    num_experts: int = 8  # n (the paper: 8)
    expert_widths: list[int] = dataclasses.field(default_factory=list)  # one per path node; [] = 64, 32, 16, ...
    hidden: list[int] = dataclasses.field(default_factory=lambda: [32])  # the MLPs of Eq. 7
    gate: str = "tree"  # tree (Eq. 4-6) | leaf (a flat gate keyed on the leaf id: variant treems-flat)
    graph_attention: str = "paper"  # paper (Eq. 10) | product (the scenario meets each neighbour)
    levels: int = 1  # L attention levels (0 = no user graph: variant treems-nog)
    neighbours: int = 10  # K sampled neighbours per user and view
    views: list[str] = dataclasses.field(default_factory=list)  # user-user views used; [] = all
    history: bool = True  # t of Eq. 3: per view log(1 + training edges between u and v)
    item_context: bool = True  # c = [h_H || e_item]; false = h_H
    gamma: float = 0.1  # weight of the inconsistency loss (Eq. 15-16)
    # row: Eq. 15 on every triple's gates, as written (measured: it drives every gate to uniform, so no
    # scenario picks its experts) | batch: on the batch's mean gates (experts evenly used over the scenarios)
    aux_over: str = "row"
    l2: float = 0.0  # lambda of Eq. 16, over every trainable variable
    task_b_loss: str = "bce"  # bce (Eq. 14) | bpr
    bias: bool = True  # item / participant biases started at log(1 + training count)
    zero_head: bool = True  # the prediction layer starts at zero (the model starts as the popularity ranker)


@dataclasses.dataclass
class ScenarioGraphSettings:
    """TreeMS's scenario-aware multi-view user-graph attention as a plug-in for task B of MGBR and MAMGBR,
    ``model.user_graph = "attention"`` (:mod:`tfgb.models.user_graph`)."""

    embedding_dim: int = 32  # d of the plug-in's own user and item tables
    node_dim: int = 16  # the scenario tree's node embeddings
    lstm_units: int = 16  # the path LSTM's state (the scenario context, with the item embedding)
    levels: int = 1  # L attention levels (0: the plug-in's plain user embedding)
    neighbours: int = 10  # K sampled neighbours per user and view
    views: list[str] = dataclasses.field(default_factory=list)  # [] = every view
    graph_attention: str = "paper"  # paper (Eq. 10) | product
    history: bool = True  # per view log(1 + training edges u -> p) among the MLP's inputs
    hidden: list[int] = dataclasses.field(default_factory=lambda: [32])  # the MLP of the added logit


@dataclasses.dataclass
class NoSettings:
    """A model without hyper-parameters."""
