"""What a run records in OUT/manifest.json: enough to know exactly what made each image."""

from __future__ import annotations

import datetime
import platform
import sys
from importlib import metadata
from typing import Any, Mapping, Sequence

from dmgd.data.store import image_name

_PACKAGES = ("dmgd", "torch", "diffusers", "pot", "scikit-learn", "numpy", "lark", "safetensors")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _data_record(real: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "source": real.root or getattr(real, "source", None) or "embedded digits (scikit-learn load_digits), train split",
        "fingerprint": real.fingerprint,
        "images": len(real),
        "class_counts": dict(zip(real.class_names, real.class_counts())),
        "conversions": dict(real.conversions),
    }
    if real.root is None:
        from dmgd.data.digits import load_split

        split = load_split()
        record["train_indices"] = [int(i) for i in split.train_indices]
        record["test_indices"] = [int(i) for i in split.test_indices]
    return record


def build_manifest(recipe: Any, schedule: Any, backbone: Any, real: Any, class_ids: Sequence[int],
                   identity: Mapping[str, Any], targets: Mapping[int, Any], device: str,
                   *, sharding: Mapping[str, Any] | None = None,
                   sessions: Sequence[Mapping[str, Any]] = (), created: str | None = None) -> dict[str, Any]:
    """The manifest of a run as it starts (status "running").

    sharding: how the classes are cut into blocks and given to ranks (`dmgd.pipeline`);
    sessions: one record per start of the run (the first, then every --resume), the
    current one last; created: when the run was first started (kept across resumes).
    `class_names` are the output folders; `classes` maps each data class to its model class
    (and label) and its folder."""
    from dmgd.data.classes import class_mapping, output_names
    from dmgd.language.sources import manifest_sources
    from dmgd.sampling.sampler import sample_seed  # noqa: F401  (documents the derivation below)

    s = schedule.settings
    folders = output_names(real.class_names, class_ids, getattr(s, "out_names", "data"))  # the store's class folders
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {
        "format": "dmgd-run-v1",
        "status": "running",
        "created": created or now,
        "command": sys.argv,
        "identity": dict(identity),
        "recipe": {"path": recipe.path, "text": recipe.source, "hash": schedule.recipe_hash,
                   **manifest_sources(recipe)},
        "settings": s.to_dict(),
        "num_steps": schedule.num_steps,
        "schedule": schedule.to_dict(),
        "model": {
            "id": backbone.model_id,
            "weights_sha256": backbone.weights_sha256,
            "num_classes": backbone.num_classes,
            "latent_shape": list(backbone.latent_shape),
            "vae": backbone.vae is not None,
            "learned_sigma": backbone.learned_sigma,
        },
        "data": _data_record(real),
        "class_names": list(folders),
        "model_class_ids": [int(c) for c in class_ids],
        "classes": class_mapping(real.class_names, class_ids, folders, getattr(backbone, "class_names", None)),
        "layout": {
            "images": f"<class name>/<index as {image_name(0)}>.png",
            "latents": f"<class name>/<index as {image_name(0)}>.safetensors",
            "progress": ".progress-rank-<rank>.json (the current session's, one a rank)",
            "temporary": ".<file name>.tmp-<pid> beside the file, renamed over it when whole",
        },
        "seeds": {
            "seed": s.seed,
            "per_sample": "torch.Generator seeded with the first 8 bytes of "
                          "sha256('dmgd-sample:<seed>:<model class id>:<index>') & (2**63-1)",
        },
        "targets": {str(k): t.to_manifest() for k, t in sorted(targets.items())},
        "device": device,
        "sharding": dict(sharding or {}),
        "sessions": [dict(x) for x in sessions],
        "versions": package_versions(),
        "progress": {"finished": 0, "total": len(class_ids) * s.ipc},
    }
