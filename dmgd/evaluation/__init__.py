"""`dmgd eval`: train classifiers on a distilled set, test them on real held-out images.

`protocol.evaluate` runs it. Without torch: `config` (EvalConfig, the presets), `results`
(EvalResult, SeedResult), `stats`. With torch: `sets` (reading both sets), `training` (one
seed), `models` (ConvNet-6, ResNet-10-AP, ResNet-18), `resnet` (torchvision's ResNet-18
with batch norm), `augment`, `soft` (the soft-label protocol's augmentation and loss),
`teacher` (training, caching and loading teachers), `report` (eval.json, the table). `import dmgd.evaluation` imports none of them.
"""
