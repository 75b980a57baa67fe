"""Fingerprints of the weights behind a checkpoint name, and its ``checkpoints`` row.

Reads the weight files a spec uses (its source or its base's, plus LoRA and textual
inversion files; for a hub model, the local hub cache): their size and first and last
MiB, or every byte with ``full=True``. Writes nothing; the runner stores the results
under ``DIR/checkpoints/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from evaluator.generation.checkpoints.detect import hub_cached_file
from evaluator.generation.checkpoints.spec import (
    CheckpointSpec,
    folder_weight_files,
    resolve_source,
)
from evaluator.workspace.records import utcnow

MIB = 1 << 20


def _file_digest(path: Path, full: bool) -> dict:
    stat = path.stat()
    digest = hashlib.sha256()
    digest.update(str(stat.st_size).encode())
    with open(path, "rb") as handle:
        if full:
            for block in iter(lambda: handle.read(8 * MIB), b""):
                digest.update(block)
        else:
            digest.update(handle.read(MIB))
            if stat.st_size > MIB:
                handle.seek(max(stat.st_size - MIB, MIB))
                digest.update(handle.read(MIB))
    return {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest.hexdigest()}


def fingerprint(spec: CheckpointSpec, specs: dict[str, CheckpointSpec] | None = None, full: bool = False) -> dict:
    """Fingerprint of the weights a checkpoint uses (its source, or its base's, plus adapters).

    Quick (default): per file, SHA-256 over the size and the first and last MiB: catches
    a replaced, retrained, truncated or re-downloaded file in milliseconds even for 7 GB
    files. ``full=True`` hashes every byte. The result is content-based, so copying the
    files to another machine keeps it; mtimes are recorded beside it (``files``) to say
    which file changed. Returns ``{"fingerprint", "method", "files"}``.
    """
    specs = specs or {spec.name: spec}
    origin = resolve_source(spec, specs)
    files: dict[str, dict] = {}
    roots: list[tuple[str, list[Path]]] = []
    if origin.source_type == "hub":
        cached = hub_cached_file(origin.source, "model_index.json")
        roots.append(("source", folder_weight_files(cached.parent) if cached else []))
        if not cached:
            files[f"hub:{origin.source}"] = {"size": None, "mtime": None, "sha256": "uncached"}
    elif origin.source_type == "folder":
        roots.append(("source", folder_weight_files(Path(origin.source))))
    else:
        roots.append(("source", [Path(origin.source)]))
    roots.append(("lora", [a.path for a in spec.lora]))
    roots.append(("textual_inversion", [t.path for t in spec.textual_inversion]))
    for label, paths in roots:
        for path in paths:
            if label == "source" and origin.source_type == "folder":
                key = f"source/{path.relative_to(origin.source).as_posix()}"
            else:
                key = f"{label}/{path.name}"
            files[key] = _file_digest(path, full)
            files[key]["path"] = str(path)
    scales = [a.scale for a in spec.lora] + [t.token for t in spec.textual_inversion]
    overall = hashlib.sha256(json.dumps(
        {"files": {k: (v["size"], v["sha256"]) for k, v in sorted(files.items())}, "adapters": scales},
        sort_keys=True,
    ).encode())
    method = "full" if full else "quick"
    return {"fingerprint": f"{method}:{overall.hexdigest()[:24]}", "method": method, "files": files}


def model_hash(spec: CheckpointSpec, specs: dict[str, CheckpointSpec] | None = None) -> str:
    """A short hash for the PNG ``Model hash`` field (A1111 shows 10 hex digits)."""
    return fingerprint(spec, specs)["fingerprint"].split(":", 1)[1][:10]


def checkpoint_record(spec: CheckpointSpec, specs: dict[str, CheckpointSpec], fp: dict, kind: str | None) -> dict:
    """The ``checkpoints`` table row (keys = its columns) for ``workdir/checkpoints/<name>.json``."""
    origin = resolve_source(spec, specs)
    return {
        "name": spec.name,
        "source": origin.source,
        "kind": kind,
        "base": spec.base,
        "adapters": spec.adapters_json(),
        "fingerprint": fp["fingerprint"],
        "dtype": spec.dtype,
        "scheduler": spec.scheduler,
        "notes": spec.notes,
        "added_at": utcnow().isoformat(timespec="seconds"),
    }


def changed_files(old: dict, new: dict) -> list[str]:
    """Which files differ between two ``fingerprint()`` results (same method)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None:
            out.append(f"{key} (added)")
        elif b is None:
            out.append(f"{key} (removed)")
        elif (a.get("size"), a.get("sha256")) != (b.get("size"), b.get("sha256")):
            out.append(f"{key} (size {a.get('size')} -> {b.get('size')})" if a.get("size") != b.get("size") else f"{key} (content)")
    return out
