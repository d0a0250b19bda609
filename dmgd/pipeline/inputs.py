"""Stages 2 and 3: the frozen backbone and the compiled schedule; the real data, the class
mapping, the blocks of classes, and the k-means targets."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

from attrs import field, frozen

from dmgd.errors import option
from dmgd.language.schedule import Schedule
from dmgd.pipeline.request import RunError, RunRequest

log = logging.getLogger("dmgd.run")


@frozen
class Model:
    """The loaded backbone and the schedule compiled for its noise levels (once)."""

    backbone: Any = field(repr=False)
    schedule: Schedule = field(repr=False)
    seconds: float


@frozen
class Targets:
    """The run's real data and what is built from it for this rank.

    class_ids: the model class of each data class; blocks: the classes cut into blocks
    (each sampled as one batch); mine: this rank's blocks and classes; built: {K:
    ClassTargets} of every class; tables: the same as `TargetTable`s the sampler reads;
    report_k: the K the manifest's OT distance is measured against; folders: each class's
    output folder (`out_names`: the data's names, or the model class as 00193)."""

    real: Any = field(repr=False)
    class_ids: tuple[int, ...]
    block_size: int
    blocks: tuple[tuple[int, ...], ...]
    my_blocks: tuple[tuple[int, ...], ...]
    mine: tuple[int, ...]
    built: Mapping[int, Any] = field(repr=False)
    tables: Mapping[int, Any] = field(repr=False)
    report_k: int
    seconds: float
    folders: tuple[str, ...] | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        """The output folder names, one a class (the data's own names unless `out_names = index`)."""
        return self.folders if self.folders is not None else self.real.class_names


def load_model(request: RunRequest, device: str) -> Model:
    """The frozen backbone of `settings.model`, and the recipe compiled at its noise levels
    (and, with the recipe's `reference`, its windows carried to the model's latent size)."""
    from dmgd.api import compile as compile_recipe
    from dmgd.sampling.backbones import load_backbone, with_precision
    from dmgd.sampling.schedulers import noise_levels

    tic = time.perf_counter()
    backbone = with_precision(load_backbone(request.settings.model, device=device), request.settings.precision)
    noise = noise_levels(request.settings.sampler, request.num_steps,
                         scheduler_config=dict(backbone.scheduler_config or {}) or None)
    schedule = compile_recipe(request.recipe, steps=request.steps, sampler=request.sampler,
                              overrides=dict(request.overrides), noise=noise, latent_shape=backbone.latent_shape)
    return Model(backbone, schedule, time.perf_counter() - tic)


def map_classes(data_names: Sequence[str], backbone: Any) -> tuple[int, ...]:
    """The model class id of each data class: by name, then ImageNet wnids by DiT's table (a
    1000-class model), then by count, then numeric names."""
    from dmgd.data.classes import imagenet_class_ids

    model_names = tuple(backbone.class_names or ())
    if model_names and all(name in model_names for name in data_names):
        return tuple(model_names.index(name) for name in data_names)
    wnid_ids = imagenet_class_ids(data_names, backbone.num_classes)
    if wnid_ids is not None:
        return wnid_ids
    if len(data_names) == backbone.num_classes:
        return tuple(range(len(data_names)))
    if all(name.isdigit() and int(name) < backbone.num_classes for name in data_names):
        return tuple(int(name) for name in data_names)
    raise RunError(
        f"the data has {len(data_names)} classes and the model {backbone.num_classes}, and the "
        "class folders' names do not say which model class each one is: name each class folder "
        "after its model class (its index, e.g. '207', its label in the model's id2label, or, for a "
        "1000-class ImageNet model, its wnid, e.g. 'n02096294')"
    )


def read_real_data(request: RunRequest, model: Model, ctx: Any) -> tuple[Any, tuple[int, ...], int, list, list]:
    """(real data, class ids, block size, every block, this rank's blocks)."""
    from dmgd.data.store import check_class_names
    from dmgd.data.targets import real_data_for_backbone
    from dmgd.distributed import blocks_of_rank, class_blocks

    settings = model.schedule.settings
    real = real_data_for_backbone(settings.data, model.backbone, classes=settings.classes)
    check_class_names(real.class_names)
    class_ids = map_classes(real.class_names, model.backbone)
    C = len(class_ids)
    block_size = request.batch_size or recorded_block_size(request) or memory_block_size(C, model.backbone, ctx)
    blocks = class_blocks(C, block_size)
    my_blocks = blocks_of_rank(blocks, ctx.rank, ctx.world_size)
    if ctx.distributed and len(blocks) < ctx.world_size and ctx.is_main:
        log.warning("%d ranks but only %d block(s) of classes: ranks %d.. have nothing to sample; pass "
                    "%s %d or less to use them all", ctx.world_size, len(blocks), len(blocks),
                    option("batch"), max(1, C // ctx.world_size))
    return real, class_ids, block_size, blocks, my_blocks


def recorded_block_size(request: RunRequest) -> int | None:
    """A resumed run's block size, as its manifest records it (the choice from free GPU
    memory is made once, when the run starts, so that a resume on another GPU samples the
    same blocks)."""
    import json

    if request.mode != "resume":
        return None
    try:
        identity = json.loads((request.out / "manifest.json").read_text()).get("identity", {})
    except (OSError, ValueError, AttributeError):
        return None
    size = identity.get("block_size") if isinstance(identity, dict) else None
    return int(size) if isinstance(size, int) and size >= 1 else None


# Greedy matching samples a block's classes as one batch: 2 rows a class (CFG), each with its
# activations kept for the energies' gradients; the probe measures one row's peak memory,
# and a block takes at most this share of the free memory.
MEMORY_SHARE = 0.6
ROWS_PER_CLASS = 2


def block_size_for_memory(num_classes: int, free_bytes: int, bytes_per_class: int) -> int:
    """The default block size (`default_block_size`), cut to what fits in MEMORY_SHARE of
    `free_bytes`; at least 1."""
    from dmgd.distributed import default_block_size

    fits = int(MEMORY_SHARE * free_bytes) // max(1, int(bytes_per_class))
    return max(1, min(default_block_size(num_classes), fits))


def memory_block_size(num_classes: int, backbone: Any, ctx: Any) -> int:
    """Classes a block holds when `--batch` is not given: on the CPU `default_block_size`;
    on a GPU also no more than its free memory holds (every rank agrees on the smallest)."""
    from dmgd.distributed import default_block_size
    from dmgd.sampling.backbones import probe_row_bytes

    device = next(backbone.transformer.parameters()).device
    if device.type != "cuda":
        return default_block_size(num_classes)
    import torch

    per_class = ROWS_PER_CLASS * probe_row_bytes(backbone)
    size = block_size_for_memory(num_classes, int(torch.cuda.mem_get_info(device)[0]), per_class)
    size = min(ctx.all_gather(size))
    log.info("block size %d: %d classes sampled together (about %.0f MiB a class, %.0f MiB free)", size, size,
             per_class / 2**20, torch.cuda.mem_get_info(device)[0] / 2**20)
    return size


def build_run_targets(request: RunRequest, model: Model, ctx: Any, reporter: Any) -> Targets:
    """Read the real data and build the k-means targets every energy of the schedule needs
    (and the report's), this rank's classes only under torchrun (exchanged after)."""
    from dmgd.data.classes import output_names
    from dmgd.data.targets import build_targets
    from dmgd.guidance import TargetTable, report_k, target_ks

    reporter.stage("reading the real data")
    real, class_ids, block_size, blocks, my_blocks = read_real_data(request, model, ctx)
    mine = tuple(sorted(c for block in my_blocks for c in block))
    reporter.stage("building the k-means targets")
    tic = time.perf_counter()
    schedule = model.schedule
    k_report = report_k(schedule, min(real.class_counts()))
    built = build_targets(model.backbone, real, target_ks(schedule) | {k_report}, seed=schedule.settings.seed,
                          cache_dir=request.cache_dir, classes=list(mine) if ctx.distributed else None,
                          gather=ctx.all_gather if ctx.distributed else None, write_cache=ctx.is_main,
                          progress=ctx.is_main)
    tables = {k: TargetTable(t.points, t.masses, class_ids) for k, t in built.items()}
    folders = output_names(real.class_names, class_ids, schedule.settings.out_names)
    return Targets(real=real, class_ids=class_ids, block_size=block_size, blocks=tuple(blocks),
                   my_blocks=tuple(my_blocks), mine=mine, built=built, tables=tables, report_k=k_report,
                   seconds=time.perf_counter() - tic, folders=folders)
