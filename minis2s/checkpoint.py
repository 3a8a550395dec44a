"""Checkpoints: one ``.npz`` file of plain arrays, with a JSON document inside it. Never pickled.

A checkpoint holds the model's parameters (``param/<name>``), the optimiser's state
(``optim/<slot>.<name>``) and a JSON document (``meta``, stored as UTF-8 bytes) with the model
configuration, the vocabularies, the training position and how every random generator is derived.

Writing is atomic: the file is written under a temporary name in the same folder, flushed to
disk, and renamed over the old one (``os.replace``), so an interruption at any moment leaves
either the old checkpoint or the new one, never a broken one. Reading opens the file with
``allow_pickle=False`` and refuses, with a message naming the file, anything truncated or foreign.
"""
import json
import os
import tempfile
import zipfile

import numpy

FORMAT = "minis2s-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """The file is missing, truncated, corrupt, or not a minis2s checkpoint."""


def save(path, params, meta, optimizer_state=None):
    """Write params (name -> array), meta (JSON-able dict) and optimizer_state atomically to ``path``."""
    arrays = {f"param/{name}": numpy.asarray(value) for name, value in params.items()}
    scalars = {}
    for key, value in (optimizer_state or {}).items():
        if isinstance(value, numpy.ndarray):
            arrays[f"optim/{key}"] = value
        else:
            scalars[key] = value
    document = dict(meta, format=FORMAT, version=VERSION, optimizer_scalars=scalars)
    arrays["meta"] = numpy.frombuffer(json.dumps(document).encode("utf-8"), dtype=numpy.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            numpy.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _sync_folder(folder)


def _sync_folder(folder):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load(path):
    """-> (params dict, meta dict, optimizer_state dict). Raises CheckpointError naming the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable minis2s checkpoint (truncated or corrupt?): {error}") from error
    if "meta" not in contents:
        raise CheckpointError(f"{path}: not a minis2s checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(contents.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: its metadata is not valid JSON: {error}") from error
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a minis2s checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')} is not supported (expected {VERSION})")
    params = {key[len("param/"):]: value for key, value in contents.items() if key.startswith("param/")}
    optimizer_state = {key[len("optim/"):]: value for key, value in contents.items() if key.startswith("optim/")}
    optimizer_state.update(meta.pop("optimizer_scalars", {}))
    return params, meta, optimizer_state
