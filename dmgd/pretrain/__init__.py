"""`dmgd pretrain`: train an embedded model, a tiny class-conditional DiT on sklearn's
digits or on the corners (`dmgd.data.corners`; train split only), and write it in
diffusers' layout with its model card.

`model` (the DiT config, DiT's init, saving), `training` (`pretrain`, the loop),
`quality` (the card's sample check), `card` (MODEL_CARD.md, training_facts.json).
Importing this package imports torch and diffusers.
"""

from dmgd.pretrain.card import model_card, write_card
from dmgd.pretrain.model import (CORNERS_DIT_CONFIG, DIT_CONFIG, NULL_CLASS, NUM_CLASSES, PRETRAIN_DATA, PretrainData,
                                 build_dit, disable_label_dropout, initialize_weights, label_tables, pretrain_data,
                                 save_model)
from dmgd.pretrain.quality import (corners_digits, ddim_cfg_sample, digits_classifier, evaluate_corners,
                                   evaluate_samples, nearest_distances)
from dmgd.pretrain.training import DEFAULT_STEPS, LABEL_DROP_PROB, alphas_cumprod, pretrain, train, training_facts

__all__ = [
    "CORNERS_DIT_CONFIG", "PRETRAIN_DATA", "PretrainData", "corners_digits", "evaluate_corners", "pretrain_data",
    "DEFAULT_STEPS", "DIT_CONFIG", "LABEL_DROP_PROB", "NULL_CLASS", "NUM_CLASSES", "alphas_cumprod", "build_dit",
    "ddim_cfg_sample", "digits_classifier", "disable_label_dropout", "evaluate_samples", "initialize_weights",
    "label_tables", "model_card", "nearest_distances", "pretrain", "save_model", "train", "training_facts",
    "write_card",
]
