"""`dmgd eval`: train classifiers on a distilled set, test them on real held-out images.

`evaluate` (dmgd.evaluation.protocol) runs the protocol; `build_model` (models) builds
ConvNet-6, ResNet-10-AP and ResNet-18 with instance norm; `augment` holds the harness's
augmentations in torch; `report` writes eval.json and draws the table. Nothing here is
imported by `import dmgd.evaluation`: the submodules load torch when they are used.
"""
