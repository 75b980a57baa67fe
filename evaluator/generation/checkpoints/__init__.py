"""Checkpoints: the TOML file that names them, kind detection, fingerprints and loading.

Reads a checkpoints TOML and the weights it names; writes nothing itself (the runner
stores fingerprints under ``DIR/checkpoints/``). One module per step, each importing
only the ones before it:

* ``spec``: the TOML validated into ``CheckpointSpec``s; errors, kinds, dtypes, schedulers.
* ``detect``: sd1 / sd2 / sdxl from a folder's configs or a file's tensor names.
* ``fingerprints``: content hashes of the weights behind a name, and its ``checkpoints`` row.
* ``load``: a spec as a diffusers pipeline (single files offline), LoRA / TI fused.

Everything public is re-exported here: ``from evaluator.generation.checkpoints import X``.
"""

from __future__ import annotations

from evaluator.generation.checkpoints.detect import (
    detect_kind,
    hub_cached_file,
    kind_of_file,
    kind_of_folder,
    kind_of_keys,
    load_pickled_state_dict,
    pickle_reason,
    safetensors_keys,
)
from evaluator.generation.checkpoints.fingerprints import (
    MIB,
    changed_files,
    checkpoint_record,
    fingerprint,
    model_hash,
)
from evaluator.generation.checkpoints.load import (
    CONFIGS_DIR,
    load_pipeline,
    pipeline_class,
    prepare_config_dir,
    quiet_hf_libraries,
    set_scheduler,
    torch_dtype,
)
from evaluator.generation.checkpoints.spec import (
    CHECKPOINT_FIELDS,
    CLASS_TO_SAMPLER,
    DTYPES,
    HUB_ID_PATTERN,
    KIND_ALIASES,
    KINDS,
    LORA_FIELDS,
    NAME_PATTERN,
    PICKLE_SUFFIXES,
    SAFE_SUFFIXES,
    SCHEDULER_NAMES,
    SCHEDULERS,
    TI_FIELDS,
    WORKDIR_CHECKPOINTS,
    CheckpointChangedError,
    CheckpointError,
    CheckpointSpec,
    LoraSpec,
    PickleRefusedError,
    TextualInversionSpec,
    folder_weight_files,
    is_pickle,
    load_checkpoints,
    pickle_message,
    resolve_source,
    suggest,
    with_workdir_checkpoints,
)

__all__ = [
    "quiet_hf_libraries",
    "CHECKPOINT_FIELDS", "CLASS_TO_SAMPLER", "CONFIGS_DIR", "DTYPES", "HUB_ID_PATTERN", "KIND_ALIASES",
    "KINDS", "LORA_FIELDS", "MIB", "NAME_PATTERN", "PICKLE_SUFFIXES", "SAFE_SUFFIXES", "SCHEDULER_NAMES",
    "SCHEDULERS", "TI_FIELDS", "CheckpointChangedError", "CheckpointError", "CheckpointSpec", "LoraSpec",
    "PickleRefusedError", "TextualInversionSpec", "changed_files", "checkpoint_record", "detect_kind",
    "fingerprint", "folder_weight_files", "hub_cached_file", "is_pickle", "kind_of_file", "kind_of_folder",
    "kind_of_keys", "load_checkpoints", "load_pickled_state_dict", "load_pipeline", "model_hash",
    "pickle_message", "pickle_reason", "pipeline_class", "prepare_config_dir", "resolve_source",
    "safetensors_keys", "set_scheduler", "suggest", "torch_dtype", "WORKDIR_CHECKPOINTS",
    "with_workdir_checkpoints",
]
